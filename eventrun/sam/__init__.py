"""Run an AWS SAM application: read its template and translate it to an eventrun config.

What it does: reads the CloudFormation template (YAML with the short-form tags, or
JSON), resolves parameters, pseudo parameters, conditions, mappings and intrinsic
functions to local values, merges ``Globals``, and maps each ``AWS::Serverless::Function``
and its ``Events`` to an eventrun function and triggers (docs/sam.md lists every property).
Also creates the template's SQS queues on a local endpoint (moto, LocalStack, ElasticMQ)
before the daemon starts.

May import: ``eventrun.config``, ``eventrun.brokers``, ``eventrun.exceptions``,
``eventrun.common``; imported only by the CLI (``eventrun run|check|invoke -t``).

Exports: :func:`load_sam`, :class:`SamApp`, :func:`printable`, :func:`prepare_local`,
:func:`make_bucket_dirs`.
"""

from __future__ import annotations

from eventrun.sam._local import make_bucket_dirs, prepare_local
from eventrun.sam._translate import SamApp, load_sam, printable

__all__ = ["SamApp", "load_sam", "make_bucket_dirs", "prepare_local", "printable"]
