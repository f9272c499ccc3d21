"""Templates -> translated config, key by key; intrinsics and Globals by SAM's rules;
parameters; the equivalent eventrun.yaml (``check --print``) round trip."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventrun.config import parse_config
from eventrun.exceptions import ConfigError
from eventrun.sam import SamApp, load_sam, printable

ENV = {"AWS_REGION": "eu-west-1"}
TEMPLATES = Path(__file__).resolve().parent / "templates"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sam-app" / "template.yaml"


def D(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def write(tmp_path: Path, body: str, *, header: bool = True) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "app.py").write_text("def handler(event, context):\n    return event\n")
    text = textwrap.dedent(body)
    if header:
        text = "Transform: AWS::Serverless-2016-10-31\n" + text
    path = tmp_path / "template.yaml"
    path.write_text(text)
    return path


def fn(props: str = "", events: str = "", name: str = "Fn") -> str:
    """One python function resource (CodeUri src/, Handler app.handler), at column 0."""
    out = (
        f"{name}:\n"
        "  Type: AWS::Serverless::Function\n"
        "  Properties:\n"
        "    CodeUri: src/\n"
        "    Handler: app.handler\n"
        "    Runtime: python3.11\n"
    )
    if props:
        out += textwrap.indent(textwrap.dedent(props).strip("\n") + "\n", " " * 4)
    if events:
        out += "    Events:\n" + textwrap.indent(
            textwrap.dedent(events).strip("\n") + "\n", " " * 6
        )
    return out


def translate(tmp_path: Path, resources: str, extra: str = "", **kwargs: Any) -> SamApp:
    body = textwrap.dedent(extra) + "Resources:\n" + textwrap.indent(resources, "  ")
    kwargs.setdefault("environ", ENV)
    kwargs.setdefault("stack_name", "st")
    return load_sam(write(tmp_path, body), **kwargs)


def function(app: SamApp, name: str = "Fn") -> dict[str, Any]:
    result: dict[str, Any] = app.document["functions"][name]
    return result


# -- the public sample templates (facts) ------------------------------------------------


def test_sam_init_hello_world() -> None:
    app = load_sam(TEMPLATES / "hello-world" / "template.yaml", environ=ENV)
    assert app.document["functions"] == {
        "HelloWorldFunction": {
            "handler": "app.lambda_handler",
            "runtime": "process",
            "code": "hello_world",
            "timeout": 3.0,
            "memory_mb": 128,
            "triggers": [
                {
                    "http": {
                        "path": "/hello",
                        "methods": ["GET"],
                        "auth": "none",
                        "payload_format": "1.0",
                        "stage": "Prod",
                    }
                }
            ],
        }
    }
    assert app.template.stack == "hello-world"
    assert "HelloWorldFunction.Architectures: ignored (no local meaning)" in app.notes
    assert app.unsupported == []
    cfg = app.loaded.config.functions["HelloWorldFunction"]
    assert app.loaded.code_dir(cfg) == TEMPLATES / "hello-world" / "hello_world"


def test_json_template_fifo_queue() -> None:
    app = load_sam(TEMPLATES / "sqs-app" / "template.json", environ=ENV, stack_name="s")
    f = function(app, "MySQSQueueFunction")
    assert f["environment"] == {"QUEUE": "s-MySqsQueue.fifo", "ENV": "test"}
    assert f["triggers"] == [
        {"sqs": {"queue_name": "s-MySqsQueue.fifo", "batch_size": 10, "maximum_concurrency": 5}}
    ]
    (queue,) = app.queues
    assert queue.attributes == {"FifoQueue": "true"}
    assert queue.arn == "arn:aws:sqs:eu-west-1:123456789012:s-MySqsQueue.fifo"


# -- events, key by key -----------------------------------------------------------------

EVENTS = [
    (
        "SQS",
        """
        Q: {Type: SQS, Properties: {Queue: !GetAtt Q.Arn, BatchSize: 7,
            MaximumBatchingWindowInSeconds: 2, FunctionResponseTypes: [ReportBatchItemFailures],
            FilterCriteria: {Filters: [{Pattern: '{"body": {"a": [1]}}'}]}}}
        """,
        {
            "sqs": {
                "queue_name": "st-Q",
                "batch_size": 7,
                "maximum_batching_window": 2.0,
                "report_batch_item_failures": True,
                "filter_criteria": {"filters": [{"pattern": '{"body": {"a": [1]}}'}]},
            }
        },
    ),
    (
        "Schedule",
        """
        S: {Type: Schedule, Properties: {Schedule: "cron(0 12 * * ? *)", Input: '{"a": 1}'}}
        """,
        {"cron": {"schedule": "cron(0 12 * * ? *)", "input": {"a": 1}}},
    ),
    (
        "ScheduleV2",
        """
        S: {Type: ScheduleV2, Properties: {ScheduleExpression: rate(5 minutes),
            ScheduleExpressionTimezone: Europe/Paris}}
        """,
        {"cron": {"schedule": "rate(5 minutes)", "timezone": "Europe/Paris"}},
    ),
    (
        "HttpApi with a path",
        """
        H: {Type: HttpApi, Properties: {Path: "/items/{id}", Method: POST}}
        """,
        {"http": {"path": "/items/{id}", "methods": ["POST"], "auth": "none"}},
    ),
    (
        "HttpApi catch-all, payload 1.0",
        """
        H: {Type: HttpApi, Properties: {PayloadFormatVersion: "1.0"}}
        """,
        {
            "http": {
                "path": "/{proxy+}",
                "methods": ["*"],
                "auth": "none",
                "payload_format": "1.0",
            }
        },
    ),
    (
        "Api greedy any",
        """
        A: {Type: Api, Properties: {Path: "/files/{proxy+}", Method: any}}
        """,
        {
            "http": {
                "path": "/files/{proxy+}",
                "methods": ["*"],
                "auth": "none",
                "payload_format": "1.0",
                "stage": "Prod",
            }
        },
    ),
    (
        "S3 with prefix and suffix",
        """
        U: {Type: S3, Properties: {Bucket: !Ref B,
            Events: ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
            Filter: {S3Key: {Rules: [{Name: prefix, Value: in/}, {Name: suffix, Value: .csv}]}}}}
        """,
        {
            "filewatch": {
                "path": "buckets/my-bucket",
                "events": ["created", "removed"],
                "patterns": ["in/*.csv"],
            }
        },
    ),
    (
        "SelfManagedKafka",
        """
        K: {Type: SelfManagedKafka, Properties: {KafkaBootstrapServers: ["127.0.0.1:9092"],
            Topics: [orders], ConsumerGroupId: grp, StartingPosition: LATEST, BatchSize: 50}}
        """,
        {
            "kafka": {
                "connection": "Fn-K",
                "topics": ["orders"],
                "group_id": "grp",
                "starting_position": "LATEST",
                "batch_size": 50,
            }
        },
    ),
]

SIDE = """Q: {Type: AWS::SQS::Queue}
B: {Type: AWS::S3::Bucket, Properties: {BucketName: my-bucket}}
"""


@pytest.mark.parametrize(("what", "events", "trigger"), EVENTS, ids=[e[0] for e in EVENTS])
def test_event_mapping(tmp_path: Path, what: str, events: str, trigger: dict[str, Any]) -> None:
    app = translate(tmp_path, SIDE + fn(events=events))
    assert function(app)["triggers"] == [trigger]
    if what == "SelfManagedKafka":
        assert app.document["connections"]["kafka"] == {
            "Fn-K": {"bootstrap_servers": ["127.0.0.1:9092"]}
        }


def test_disabled_events_are_not_started(tmp_path: Path) -> None:
    app = translate(
        tmp_path,
        SIDE
        + fn(
            events="""
            Q: {Type: SQS, Properties: {Queue: !GetAtt Q.Arn, Enabled: false}}
            S: {Type: ScheduleV2, Properties: {ScheduleExpression: rate(1 hour), State: DISABLED}}
            """
        ),
    )
    assert "triggers" not in function(app)
    assert "Fn.Q: disabled in the template, not started" in app.notes


def test_function_properties(tmp_path: Path) -> None:
    app = translate(
        tmp_path,
        D("""
        Failures: {Type: AWS::SQS::Queue, Properties: {QueueName: failures}}
        Other:
          Type: AWS::Serverless::Function
          Properties:
            {CodeUri: src/, Handler: app.handler, Runtime: python3.12, FunctionName: other-fn}
        """)
        + fn(
            props="""
            Timeout: 30
            MemorySize: 512
            ReservedConcurrentExecutions: 3
            AutoPublishAlias: live
            Policies: [AWSLambdaBasicExecutionRole]
            Environment:
              Variables:
                {FLAG: true, N: 5, NAME: !Ref Other, ARN: !GetAtt Other.Arn, URL: !Ref Failures}
            EventInvokeConfig:
              MaximumEventAgeInSeconds: 120
              MaximumRetryAttempts: 1
              DestinationConfig:
                OnSuccess: {Type: Lambda, Destination: !GetAtt Other.Arn}
                OnFailure: {Type: SQS, Destination: !GetAtt Failures.Arn}
            """
        ),
        environ={**ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:4566"},
    )
    f = function(app)
    assert f["timeout"] == 30.0
    assert f["memory_mb"] == 512
    assert f["concurrency"] == 3
    assert f["environment"] == {
        "FLAG": "true",
        "N": "5",
        "NAME": "other-fn",
        "ARN": "arn:aws:lambda:eu-west-1:123456789012:function:other-fn",
        "URL": "http://127.0.0.1:4566/123456789012/failures",
    }
    assert f["maximum_event_age"] == 120.0
    assert f["maximum_retry_attempts"] == 1
    assert f["destinations"] == {"on_success": "function:Other", "on_failure": "sqs:aws/failures"}
    assert app.document["connections"]["sqs"] == {"aws": {}}
    assert "Fn.AutoPublishAlias: ignored (no local meaning)" in app.notes
    assert "Fn.Policies: ignored (no local meaning)" in app.notes


def test_event_invoke_config_sqs_without_destination_gets_sam_queue(tmp_path: Path) -> None:
    app = translate(
        tmp_path,
        fn(
            props="""
            EventInvokeConfig:
              DestinationConfig:
                OnFailure: {Type: SQS}
            """
        ),
    )
    assert function(app)["destinations"] == {
        "on_failure": "sqs:aws/st-FnEventInvokeConfigOnFailureQueue"
    }
    assert app.extra_queues == ["st-FnEventInvokeConfigOnFailureQueue"]


def test_dead_letter_queue_is_on_failure(tmp_path: Path) -> None:
    app = translate(
        tmp_path,
        "D: {Type: AWS::SQS::Queue}\n"
        + fn(props="DeadLetterQueue: {Type: SQS, TargetArn: !GetAtt D.Arn}\n"),
    )
    assert function(app)["destinations"] == {"on_failure": "sqs:aws/st-D"}


def test_queue_redrive_and_properties(tmp_path: Path) -> None:
    app = translate(
        tmp_path,
        D("""
        Dlq: {Type: AWS::SQS::Queue, Properties: {QueueName: !Sub "${AWS::StackName}-dead"}}
        Main:
          Type: AWS::SQS::Queue
          Properties:
            VisibilityTimeout: 45
            MessageRetentionPeriod: 3600
            RedrivePolicy: {deadLetterTargetArn: !GetAtt Dlq.Arn, maxReceiveCount: 4}
        """)
        + fn(),
    )
    queues = {q.logical_id: q for q in app.queues}
    assert queues["Dlq"].name == "st-dead"
    main = queues["Main"]
    assert main.dead_letter == "Dlq"
    assert main.attributes["VisibilityTimeout"] == "45"
    assert main.attributes["MessageRetentionPeriod"] == "3600"
    assert main.attributes["RedrivePolicy"] == (
        '{"deadLetterTargetArn": "arn:aws:sqs:eu-west-1:123456789012:st-dead", '
        '"maxReceiveCount": "4"}'
    )


# -- intrinsics, parameters, Globals -------------------------------------------------------

INTRINSICS = """
Parameters:
  Stage: {Type: String, Default: dev, AllowedValues: [dev, prod]}
  Names: {Type: CommaDelimitedList, Default: "a,b,c"}
  Size: {Type: Number, Default: 3}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  NotProd: !Not [!Condition IsProd]
  Both: !And [!Condition NotProd, !Equals [x, x]]
  Either: !Or [!Condition IsProd, !Condition Both]
Mappings:
  M: {dev: {Level: debug}, prod: {Level: info}}
"""

VARIABLES = """
Environment:
  Variables:
    SUB: !Sub "${AWS::StackName}-${Stage}-${AWS::Region}-${AWS::AccountId}-${AWS::Partition}"
    SUB_VARS: !Sub ["${A}/${Q.QueueName}/${!Literal}", {A: !Ref Size}]
    JOIN: !Join ["-", [!Ref Stage, !Select [1, !Ref Names]]]
    SPLIT: !Select [2, !Split [",", "x,y,z"]]
    IF: !If [IsProd, big, small]
    EITHER: !If [Either, either, neither]
    MAP: !FindInMap [M, !Ref Stage, Level]
    MAP_DEFAULT: !FindInMap [M, staging, Level, {DefaultValue: none}]
    B64: !Base64 hi
    AZ: !Select [0, !GetAZs ""]
    SUFFIX: !Ref AWS::URLSuffix
    GONE: !If [IsProd, x, !Ref AWS::NoValue]
    IMPORTED: !ImportValue shared-table
"""


def test_intrinsics(tmp_path: Path) -> None:
    config = tmp_path / "eventrun.yaml"
    config.write_text("bindings: {shared-table: {value: tbl}}\n")
    app = translate(
        tmp_path,
        "Q: {Type: AWS::SQS::Queue}\n" + fn(props=VARIABLES),
        INTRINSICS,
        config=config,
    )
    assert app.loaded.config.functions["Fn"].environment == {
        "SUB": "st-dev-eu-west-1-123456789012-aws",
        "SUB_VARS": "3/st-Q/${Literal}",
        "JOIN": "dev-b",
        "SPLIT": "z",
        "IF": "small",
        "EITHER": "either",
        "MAP": "debug",
        "MAP_DEFAULT": "none",
        "B64": "aGk=",
        "AZ": "eu-west-1a",
        "SUFFIX": "amazonaws.com",
        "IMPORTED": "tbl",
    }


def test_parameter_overrides_and_conditions(tmp_path: Path) -> None:
    app = translate(
        tmp_path,
        "Q: {Type: AWS::SQS::Queue}\n"
        + fn(props=VARIABLES.replace("    IMPORTED: !ImportValue shared-table\n", "")),
        INTRINSICS,
        overrides={"Stage": "prod", "Names": "p, q"},
    )
    env = function(app)["environment"]
    assert env["IF"] == "big"
    assert env["GONE"] == "x"
    assert env["JOIN"] == "prod-q"
    assert env["MAP"] == "info"


def test_resource_condition_drops_it(tmp_path: Path) -> None:
    app = translate(
        tmp_path,
        fn() + fn(name="ProdOnly") + "  Condition: IsProd\n",
        INTRINSICS,
    )
    assert list(app.document["functions"]) == ["Fn"]


GLOBALS = """
Globals:
  Function:
    Runtime: python3.11
    Timeout: 20
    Handler: app.handler
    Environment: {Variables: {A: global, B: global}}
    Layers: [arn:aws:lambda:eu-west-1:123456789012:layer:g:1]
"""


def test_globals_merge_by_sam_rules(tmp_path: Path) -> None:
    app = translate(
        tmp_path,
        D("""
        Local:
          Type: AWS::Serverless::Function
          Properties:
            CodeUri: src/
            Timeout: 5
            Environment: {Variables: {B: local, C: local}}
        Plain:
          Type: AWS::Serverless::Function
          Properties: {CodeUri: src/}
        Ignoring:
          Type: AWS::Serverless::Function
          Properties:
            CodeUri: src/
            Handler: app.handler
            Runtime: python3.12
            IgnoreGlobals: [Environment, Timeout]
        """),
        GLOBALS,
    )
    tpl = app.template
    assert tpl.props("Local")["Layers"] == ["arn:aws:lambda:eu-west-1:123456789012:layer:g:1"]
    fns = app.document["functions"]
    assert fns["Local"]["timeout"] == 5.0  # scalars: the resource wins
    assert fns["Local"]["environment"] == {"A": "global", "B": "local", "C": "local"}
    assert fns["Plain"]["timeout"] == 20.0
    assert fns["Plain"]["environment"] == {"A": "global", "B": "global"}
    assert "timeout" not in fns["Ignoring"]
    assert "environment" not in fns["Ignoring"]


def test_globals_lists_concatenate(tmp_path: Path) -> None:
    from eventrun.sam._template import merge_globals

    assert merge_globals({"L": [1, 2], "M": {"a": 1}}, {"L": [3], "M": {"b": 2}}) == {
        "L": [1, 2, 3],
        "M": {"a": 1, "b": 2},
    }
    assert merge_globals({"V": {"Ref": "X"}}, {"V": {"k": 1}}) == {"V": {"k": 1}}


# -- bindings and -c -------------------------------------------------------------------------


def test_config_file_supplies_server_connections_bindings_and_overrides(tmp_path: Path) -> None:
    config = tmp_path / "eventrun.yaml"
    config.write_text(
        textwrap.dedent(
            """
            server: {port: 9555}
            store: {url: "sqlite:///${DB:-state.db}"}
            connections:
              sqs: {local: {endpoint_url: "http://127.0.0.1:9324", region: eu-west-1}}
              kafka: {msk: {bootstrap_servers: "127.0.0.1:9092"}}
            bindings:
              Q: {sqs: local}
              Bucket: {directory: uploads}
              "arn:aws:kafka:eu-west-1:123456789012:cluster/c/1": {kafka: msk}
            functions:
              Extra: {handler: "app.handler", code: src}
            """
        )
    )
    app = translate(
        tmp_path,
        "Q: {Type: AWS::SQS::Queue}\nBucket: {Type: AWS::S3::Bucket}\n"
        + fn(
            props="Environment: {Variables: {URL: !Ref Q, BUCKET: !Ref Bucket}}\n",
            events="""
            Q: {Type: SQS, Properties: {Queue: !GetAtt Q.Arn}}
            U: {Type: S3, Properties: {Bucket: !Ref Bucket, Events: "s3:ObjectCreated:*"}}
            M: {Type: MSK, Properties: {Stream: "arn:aws:kafka:eu-west-1:123456789012:cluster/c/1",
                Topics: [t], StartingPosition: TRIM_HORIZON}}
            """,
        ),
        config=config,
    )
    f = function(app)
    assert f["environment"] == {
        "URL": "http://127.0.0.1:9324/123456789012/st-Q",
        "BUCKET": "uploads",
    }
    assert f["triggers"] == [
        {"sqs": {"queue_name": "st-Q", "connection": "local"}},
        {"filewatch": {"path": "uploads", "events": ["created"]}},
        {
            "kafka": {
                "connection": "msk",
                "event_source_arn": "arn:aws:kafka:eu-west-1:123456789012:cluster/c/1",
                "topics": ["t"],
                "starting_position": "TRIM_HORIZON",
            }
        },
    ]
    assert app.document["server"] == {"port": 9555}
    assert app.document["store"] == {"url": "sqlite:///${DB:-state.db}"}  # as written
    assert app.loaded.config.store.url == "sqlite:///state.db"
    assert set(app.document["functions"]) == {"Fn", "Extra"}
    assert app.loaded.config.server.port == 9555


# -- the equivalent eventrun.yaml -------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [EXAMPLE, TEMPLATES / "hello-world" / "template.yaml", TEMPLATES / "sqs-app" / "template.json"],
    ids=["sam-app", "hello-world", "sqs-app"],
)
def test_print_round_trip(template: Path) -> None:
    app = load_sam(template, environ=ENV)
    text = printable(app)
    assert text.startswith(f"# eventrun.yaml equivalent to {template.name}")
    reloaded = parse_config(text, filename="printed.yaml", environ=ENV)
    assert reloaded == app.loaded.config


def test_print_escapes_dollars(tmp_path: Path) -> None:
    app = translate(tmp_path, fn(props="Environment: {Variables: {PRICE: '$5 ${HOME}'}}\n"))
    text = printable(app)
    assert "$$5 $${HOME}" in text
    reloaded = parse_config(text, filename="printed.yaml", environ={"HOME": "/nope"})
    assert reloaded.functions["Fn"].environment["PRICE"] == "$5 ${HOME}"
    assert yaml.safe_load(text)["functions"]["Fn"]["code"] == "src"


def test_rules_schedules_and_event_source_mappings(tmp_path: Path) -> None:
    app = translate(
        tmp_path,
        D(
            """
            Q: {Type: AWS::SQS::Queue}
            Nightly:
              Type: AWS::Events::Rule
              Properties:
                ScheduleExpression: rate(1 day)
                Targets: [{Id: t, Arn: !GetAtt Fn.Arn, Input: '{"k": 1}'}]
            Hourly:
              Type: AWS::Scheduler::Schedule
              Properties:
                ScheduleExpression: cron(0 * * * ? *)
                ScheduleExpressionTimezone: Europe/Berlin
                FlexibleTimeWindow: {Mode: "OFF"}
                Target: {Arn: !GetAtt Fn.Arn, RoleArn: x}
            Pattern:
              Type: AWS::Events::Rule
              Properties:
                EventPattern: {source: [my.app]}
                Targets: [{Id: t, Arn: !GetAtt Fn.Arn}]
            Mapping:
              Type: AWS::Lambda::EventSourceMapping
              Properties: {FunctionName: !Ref Fn, EventSourceArn: !GetAtt Q.Arn, BatchSize: 3}
            """
        )
        + fn(),
    )
    assert function(app)["triggers"] == [
        {"cron": {"schedule": "rate(1 day)", "input": {"k": 1}}},
        {"cron": {"schedule": "cron(0 * * * ? *)", "timezone": "Europe/Berlin"}},
        {"sqs": {"queue_name": "st-Q", "batch_size": 3}},
    ]
    (line,) = app.unsupported
    assert line == (
        "template.yaml: Resources.Pattern.Properties.EventPattern (line 19): rule Pattern: "
        "not supported by eventrun: an EventBridge rule with an EventPattern (eventrun has no "
        "EventBridge bus, only schedules)"
    )


def test_layers_of_the_template_go_on_the_import_path(tmp_path: Path) -> None:
    (tmp_path / "lib" / "python" / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    (tmp_path / "flat").mkdir()
    app = translate(
        tmp_path,
        D(
            """
            Lib: {Type: AWS::Serverless::LayerVersion, Properties: {ContentUri: lib/}}
            Flat:
              Type: AWS::Serverless::LayerVersion
              Properties: {ContentUri: flat, LayerName: flat-layer}
            """
        )
        + fn(
            props="""
            Layers: [!Ref Lib, !Ref Flat, "arn:aws:lambda:eu-west-1:999999999999:layer:ext:3"]
            Environment: {Variables: {PYTHONPATH: /mine}}
            """
        ),
    )
    root = tmp_path.resolve()
    assert function(app)["environment"]["PYTHONPATH"] == ":".join(
        [
            str(root / "lib" / "python"),
            str(root / "lib" / "python" / "lib" / "python3.11" / "site-packages"),
            str(root / "flat"),
            "/mine",
        ]
    )
    assert (
        "Fn.Layers[2]: arn:aws:lambda:eu-west-1:999999999999:layer:ext:3 is not a layer of "
        "this template: ignored"
    ) in app.notes


def test_inline_code_and_plain_lambda_functions(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    app = translate(
        tmp_path,
        D(
            """
            Inline:
              Type: AWS::Serverless::Function
              Properties:
                Runtime: python3.12
                Handler: index.handler
                InlineCode: |
                  def handler(event, context):
                      return "inline"
            Zipped:
              Type: AWS::Lambda::Function
              Properties:
                Runtime: python3.12
                Handler: main.go
                Role: arn:aws:iam::123456789012:role/r
                Code: {ZipFile: "def go(event, context):\\n    return 'zip'\\n"}
            Plain:
              Type: AWS::Lambda::Function
              Properties: {Runtime: python3.12, Handler: app.handler, Code: plain/}
            """
        ),
    )
    fns = app.document["functions"]
    assert fns["Inline"]["code"] == ".eventrun/sam/Inline"
    assert (tmp_path / ".eventrun/sam/Inline/index.py").read_text().startswith("def handler(")
    assert fns["Zipped"]["code"] == ".eventrun/sam/Zipped"
    assert "return 'zip'" in (tmp_path / ".eventrun/sam/Zipped/main.py").read_text()
    assert fns["Plain"]["code"] == "plain"


def test_api_cors_and_stages(tmp_path: Path) -> None:
    app = translate(
        tmp_path,
        D(
            """
            Http:
              Type: AWS::Serverless::HttpApi
              Properties:
                StageName: v1
                CorsConfiguration:
                  AllowOrigins: ["https://app.example"]
                  AllowMethods: [GET, POST]
                  ExposeHeaders: [x-trace]
                  MaxAge: 600
                  AllowCredentials: true
            """
        )
        + fn(
            events="""
            H: {Type: HttpApi, Properties: {ApiId: !Ref Http, Path: /h, Method: get}}
            R: {Type: Api, Properties: {Path: /r, Method: post}}
            Open: {Type: HttpApi, Properties: {Path: /open, Method: get}}
            """
        ),
        D(
            """
            Globals:
              Api:
                Cors: {AllowOrigin: "'*'", AllowMethods: "'GET,POST'", MaxAge: "'60'"}
              HttpApi:
                CorsConfiguration: true
            """
        ),
    )
    h, r, open_ = (t["http"] for t in function(app)["triggers"])
    assert h["stage"] == "v1"
    assert h["cors"] == {
        "allow_origins": ["https://app.example"],
        "allow_methods": ["GET", "POST"],
        "expose_headers": ["x-trace"],
        "max_age": 600,
        "allow_credentials": True,
    }
    assert r["stage"] == "Prod"
    assert r["cors"] == {"allow_origins": ["*"], "allow_methods": ["GET", "POST"], "max_age": 60}
    assert open_["cors"] == {"allow_origins": ["*"], "allow_methods": ["*"], "allow_headers": ["*"]}


def test_poller_event_on_failure_destinations(tmp_path: Path) -> None:
    app = translate(
        tmp_path,
        "Dlq: {Type: AWS::SQS::Queue}\n"
        + fn(
            events="""
            K:
              Type: SelfManagedKafka
              Properties:
                KafkaBootstrapServers: ["127.0.0.1:9092"]
                Topics: [t]
                DestinationConfig: {OnFailure: {Destination: "kafka://t-dlq"}}
            K2:
              Type: SelfManagedKafka
              Properties:
                KafkaBootstrapServers: ["127.0.0.1:9092"]
                Topics: [u]
                DestinationConfig: {OnFailure: {Type: SQS, Destination: !GetAtt Dlq.Arn}}
            """
        ),
    )
    k, k2 = (t["kafka"] for t in function(app)["triggers"])
    assert k["on_failure"] == "kafka:Fn-K/t-dlq"
    assert k2["on_failure"] == "sqs:aws/st-Dlq"
    assert app.document["connections"]["sqs"] == {"aws": {}}


def test_function_url_is_a_catch_all_route(tmp_path: Path) -> None:
    url = """
    FunctionUrlConfig:
      AuthType: NONE
      Cors: {AllowOrigins: ["https://a.example"], AllowMethods: [GET], MaxAge: 5}
    """
    app = translate(tmp_path, fn(props=url))
    cors = {"allow_origins": ["https://a.example"], "allow_methods": ["GET"], "max_age": 5}
    assert function(app)["triggers"] == [
        {"http": {"path": "/{proxy+}", "methods": ["*"], "auth": "none", "cors": cors}}
    ]
    private = translate(tmp_path, fn(props="FunctionUrlConfig: {AuthType: AWS_IAM}"))
    assert function(private)["triggers"][0]["http"]["auth"] == "token"
    # two function URLs both serve every path: one server cannot tell them apart
    with pytest.raises(ConfigError) as info:
        translate(tmp_path, fn(props=url) + fn(name="Two", props=url))
    assert info.value.problems == [
        "template.yaml (translated): functions.Two.triggers[0].http.path: must be unique "
        "among http triggers (same path and method as functions.Fn.triggers[0].http), "
        "got '/{proxy+}'"
    ]


def test_amazon_mq_maps_onto_the_rabbitmq_plugin(tmp_path: Path) -> None:
    """With the eventrun-rabbitmq plugin installed (make setup installs plugins/*), an MQ
    event is the plugin's rabbitmq trigger on the connection its broker is bound to."""
    config = tmp_path / "eventrun.yaml"
    config.write_text(
        textwrap.dedent(
            """
            connections:
              rabbitmq: {mq: {url: "amqp://guest:guest@127.0.0.1:5672/%2F"}}
            bindings:
              Broker: {rabbitmq: mq}
            """
        )
    )
    app = translate(
        tmp_path,
        "Broker: {Type: AWS::AmazonMQ::Broker, Properties: {EngineType: RABBITMQ}}\n"
        + fn(
            events="""
            M: {Type: MQ, Properties: {Broker: !GetAtt Broker.Arn, Queues: [orders],
                BatchSize: 50, MaximumBatchingWindowInSeconds: 2}}
            """
        ),
        config=config,
    )
    assert app.unsupported == []
    assert function(app)["triggers"] == [
        {
            "rabbitmq": {
                "connection": "mq",
                "queue": "orders",
                "batch_size": 50,
                "maximum_batching_window": 2.0,
            }
        }
    ]
    trigger = app.loaded.config.functions["Fn"].triggers[0]
    assert trigger.kind == "rabbitmq"
    assert type(trigger.spec).__name__ == "RabbitMQTrigger"
