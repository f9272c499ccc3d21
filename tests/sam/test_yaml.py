"""The template reader: CloudFormation's short-form tags as their long form, checked
against cfn-lint's own decoder (installed with moto's server), lines of keys, and
PyYAML's global loaders left alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from eventrun.sam._yaml import line_of, parse_template
from tests.sam.test_translate import EXAMPLE, TEMPLATES

TAGS = """
Resources:
  R:
    Properties:
      A: !Ref X
      B: !GetAtt Q.Arn
      C: !GetAtt [Q, QueueName]
      D: !Sub "${AWS::StackName}-x"
      E: !Sub ["${A}", {A: !Ref Y}]
      F: !Join ["", [a, !Select [0, !Split [",", "b,c"]]]]
      G: !If [Cond, !Base64 x, !GetAZs ""]
      H: !FindInMap [M, !Ref AWS::Region, K]
      I: !ImportValue shared
      J: !Not [!Equals [a, b]]
      K: !And [!Or [!Condition C1, !Condition C2], !Condition C3]
      L: !Cidr [10.0.0.0/16, 2, 8]
"""


def plain(value: object) -> object:
    return json.loads(json.dumps(value, default=str))


@pytest.mark.parametrize(
    "text",
    [TAGS, EXAMPLE.read_text(), (TEMPLATES / "hello-world" / "template.yaml").read_text()],
    ids=["tags", "sam-app", "hello-world"],
)
def test_same_tree_as_cfn_lint(text: str) -> None:
    from cfnlint.decode.cfn_yaml import loads

    assert plain(parse_template(text, "t.yaml")) == plain(loads(text))


def test_lines_of_keys() -> None:
    tree = parse_template(TAGS, "t.yaml")
    props = tree["Resources"]["R"]["Properties"]
    assert line_of(props, "A") == 5
    assert line_of(props, "L") == 16
    assert line_of(tree["Resources"], "R") == 3


def test_json_templates(tmp_path: Path) -> None:
    tree = parse_template((TEMPLATES / "sqs-app" / "template.json").read_text(), "t.json")
    assert tree["Resources"]["MySqsQueue"] == {
        "Type": "AWS::SQS::Queue",
        "Properties": {"FifoQueue": True},
    }
    with pytest.raises(ValueError, match=r"^t.json: invalid JSON: "):
        parse_template("{nope", "t.json")


def test_global_loaders_untouched() -> None:
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load("a: !Ref X")


def test_not_a_mapping() -> None:
    with pytest.raises(ValueError, match="a template must be a mapping with Resources"):
        parse_template("- a\n", "t.yaml")
