"""``-t template.yaml`` on the command line: check (and --print), invoke standalone,
run refusing unsupported events, --parameter-overrides in SAM CLI's syntax."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from eventrun.cli import main
from eventrun.cli._sam import parse_overrides
from eventrun.config import parse_config
from tests.sam.test_translate import TEMPLATES


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    root = tmp_path / "hello"
    shutil.copytree(TEMPLATES / "hello-world", root)
    return root / "template.yaml"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_check_template(hello: Path) -> None:
    code, out, err = run("check", "-t", str(hello))
    assert code == 0, err
    assert "ok  function HelloWorldFunction: app.lambda_handler" in out
    assert "ok  trigger HelloWorldFunction/http[0]" in out
    assert out.rstrip().endswith("template.yaml: valid (1 functions)")


def test_check_print_is_an_eventrun_yaml(hello: Path) -> None:
    code, out, err = run("check", "-t", str(hello), "--print", "--stack-name", "demo")
    assert code == 0, err
    assert out.startswith("# eventrun.yaml equivalent to template.yaml (stack demo)")
    doc = yaml.safe_load(out)
    assert doc["functions"]["HelloWorldFunction"]["code"] == "hello_world"
    config = parse_config(out, filename="printed.yaml")
    assert config.functions["HelloWorldFunction"].triggers[0].http is not None


def test_invoke_standalone_from_a_template(hello: Path) -> None:
    code, out, err = run("invoke", "HelloWorldFunction", "-t", str(hello))
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"statusCode": 200, "body": json.dumps({"message": "hello world"})}


def test_unsupported_events_stop_check_and_run(hello: Path) -> None:
    text = hello.read_text().replace(
        "      Events:\n",
        "      Events:\n        Topic:\n          Type: SNS\n          Properties: {Topic: t}\n",
    )
    hello.write_text(text)
    code, _out, err = run("check", "-t", str(hello))
    assert code == 2
    assert (
        "skip  template.yaml: Resources.HelloWorldFunction.Properties.Events.Topic.Type "
        "(line 28): event HelloWorldFunction.Topic: not supported by eventrun: SNS" in err
    )
    assert "1 unsupported (listed above); run with --skip-unsupported" in err
    code, _out, err = run("check", "-t", str(hello), "--skip-unsupported")
    assert code == 0, err
    code, _out, err = run("run", "-t", str(hello), "--port", "0")
    assert code == 2
    assert err.splitlines() == [
        "error: template.yaml: Resources.HelloWorldFunction.Properties.Events.Topic.Type "
        "(line 28): event HelloWorldFunction.Topic: not supported by eventrun: SNS (eventrun "
        "has no SNS topic source)",
        "error: template.yaml: run with --skip-unsupported to start without them",
    ]


def test_template_errors_exit_2(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(
        "Parameters: {Env: {Type: String}}\nResources: {Q: {Type: AWS::SQS::Queue}}\n"
    )
    code, _out, err = run("check", "-t", str(tmp_path / "template.yaml"))
    assert code == 2
    assert err == (
        "error: template.yaml: Parameters.Env (line 1): has no Default: give it with "
        "--parameter-overrides Env=VALUE\n"
    )
    code, _out, err = run(
        "check", "-t", str(tmp_path / "template.yaml"), "--parameter-overrides", "Env=dev"
    )
    assert code == 0, err


def test_options_that_need_a_template(hello: Path) -> None:
    code, _out, err = run("check", "--print")
    assert code == 2
    assert "--print needs -t" in err
    code, _out, err = run("check", "--stack-name", "x", "-c", str(hello))
    assert code == 2
    assert "--parameter-overrides and --stack-name need -t" in err


def test_parse_overrides() -> None:
    assert parse_overrides(("A=1 B='x y'", "ParameterKey=C,ParameterValue=3 D=a=b")) == {
        "A": "1",
        "B": "x y",
        "C": "3",
        "D": "a=b",
    }
    code, _out, err = run("check", "-t", "t.yaml", "--parameter-overrides", "nokey")
    assert code == 2
    assert "'nokey': expected KEY=VALUE" in err


def test_generate_event_of_a_template_event() -> None:
    from aws_lambda_powertools.utilities.parser.models import (
        APIGatewayProxyEventModel,
        APIGatewayProxyEventV2Model,
        EventBridgeModel,
        S3Model,
        SqsModel,
    )

    from tests.sam.test_translate import EXAMPLE

    def event(name: str) -> dict[str, object]:
        code, out, err = run("generate-event", "-t", str(EXAMPLE), name, "--stack-name", "s")
        assert code == 0, err
        result: dict[str, object] = json.loads(out)
        return result

    sqs = event("ProcessOrders.Orders")
    SqsModel.model_validate(sqs)
    assert sqs["Records"][0]["eventSourceARN"] == "arn:aws:sqs:us-east-1:123456789012:s-OrdersQueue"  # type: ignore[index]
    assert event("DailyReport.Nightly") == {"report": "orders", "format": "summary"}
    rest = event("OrdersApi.GetOrder")
    APIGatewayProxyEventModel.model_validate(rest)
    assert rest["resource"] == "/orders/{id}"
    assert rest["requestContext"]["stage"] == "Prod"  # type: ignore[index]
    APIGatewayProxyEventV2Model.model_validate(event("Web.Everything"))
    s3 = event("ImportUploads.CsvUploaded")
    S3Model.model_validate(s3)
    assert s3["Records"][0]["s3"]["bucket"]["name"] == "UploadsBucket"  # type: ignore[index]
    code, _out, err = run("generate-event", "-t", str(EXAMPLE), "Nope.Event")
    assert code == 2
    assert "no event 'Nope.Event' in the template (have: DailyReport.Nightly," in err
    EventBridgeModel.model_validate(json.loads(run("generate-event", "schedule")[1]))


def test_parameter_overrides_as_separate_words_like_sam_cli(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(
        "import os\n\ndef handler(event, context):\n    return [os.environ['A'], os.environ['B']]\n"
    )
    (tmp_path / "template.yaml").write_text(
        "Parameters: {A: {Type: String}, B: {Type: String}}\n"
        "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n"
        "    Properties: {CodeUri: src/, Handler: app.handler, Runtime: python3.12,\n"
        "      Environment: {Variables: {A: !Ref A, B: !Ref B}}}\n"
    )
    template = str(tmp_path / "template.yaml")
    code, out, err = run(
        "invoke", "-t", template, "--parameter-overrides", "A=1", "B=two words", "Fn"
    )
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == ["1", "two words"]
    code, out, err = run(
        "check",
        "-t",
        template,
        "--parameter-overrides",
        "ParameterKey=A,ParameterValue=x",
        "B=y",
        "--print",
    )
    assert code == 0, err
    assert "A: x" in out
    assert "B: y" in out
