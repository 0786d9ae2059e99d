"""A stand-in ``aws`` CLI for ``infra/changeset.sh``: the CloudFormation calls it makes,
answered as CloudFormation answers them, over a state kept in a JSON file (and
Secrets Manager's DescribeSecret, for ``infra/check-dispatch-secret.sh``).

Run as ``aws`` (a wrapper on PATH execs this file). ``FAKE_AWS_STATE`` names the
state file, which a test seeds and reads:

- ``stacks``: name -> ``{"status": ..., "events": [...]}`` (events newest first, with
  ``ClientRequestToken``, ``LogicalResourceId``, ``ResourceStatus``,
  ``ResourceStatusReason``); a stack not listed does not exist;
- ``change_sets``: id (an ARN) -> the DescribeChangeSet answer;
- ``plans``: stack -> what the next change set created on it holds: a list of
  resource changes (``[]``: none, which CloudFormation reports by failing the change
  set with its "didn't contain changes" reason) or ``{"fail": reason}``;
- ``executions``: stack -> ``{"fail": [resource, reason]}`` for an execution that
  fails and rolls back (default: it succeeds);
- ``secrets``: name -> its DescribeSecret answer (for infra/check-dispatch-secret.sh);
- ``calls``: every call's arguments, appended here.

As CloudFormation does: executing a change set deletes the stack's change sets, and
a new stack waits in REVIEW_IN_PROGRESS until its CREATE change set runs.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import jmespath
import yaml

NO_CHANGES = (
    "The submitted information didn't contain changes. Submit different information "
    "to create a change set."
)
REGION_ACCOUNT = "us-east-1:000000000000"


class _TagsIgnored(yaml.SafeLoader):
    pass


_TagsIgnored.add_multi_constructor("!", lambda loader, suffix, node: None)


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def _text(value: Any) -> str:
    """The CLI's ``--output text`` of a query result."""
    if isinstance(value, list):
        if value and all(isinstance(v, list) for v in value):
            return "\n".join(_text(v) for v in value)
        return "\t".join(_text(v) for v in value)
    return "None" if value is None else str(value)


def _answer(args: list[str], document: Any) -> None:
    query = _option(args, "--query")
    result = jmespath.search(query, document) if query else document
    if _option(args, "--output") == "text":
        print(_text(result))
    else:
        print(json.dumps(result, indent=2))


def _fail(message: str) -> int:
    print(f"\nAn error occurred (ValidationError): {message}", file=sys.stderr)
    return 255


def _find_change_set(state: dict[str, Any], args: list[str]) -> dict[str, Any] | None:
    wanted = _option(args, "--change-set-name")
    stack = _option(args, "--stack-name")
    for change_set in state["change_sets"].values():
        if change_set["ChangeSetId"] == wanted or (
            change_set["ChangeSetName"] == wanted and change_set["StackName"] == stack
        ):
            return change_set
    return None


def _create_change_set(state: dict[str, Any], args: list[str]) -> int:
    stack, name = _option(args, "--stack-name"), _option(args, "--change-set-name")
    assert stack and name
    if any(
        c["StackName"] == stack and c["ChangeSetName"] == name
        for c in state["change_sets"].values()
    ):
        return _fail(f"ChangeSet {name} already exists")
    kind = _option(args, "--change-set-type") or "UPDATE"
    if kind == "CREATE":
        if stack in state["stacks"]:
            return _fail(f"Stack [{stack}] already exists")
        state["stacks"][stack] = {"status": "REVIEW_IN_PROGRESS", "events": []}
    plan = state["plans"].get(stack, [{"Action": "Modify", "LogicalResourceId": "X"}])
    change_set_id = (
        f"arn:aws:cloudformation:{REGION_ACCOUNT}:changeSet/{name}/{uuid.uuid4()}"
    )
    failed = isinstance(plan, dict) or plan == []
    state["change_sets"][change_set_id] = {
        "ChangeSetId": change_set_id,
        "ChangeSetName": name,
        "StackName": stack,
        "Status": "FAILED" if failed else "CREATE_COMPLETE",
        "ExecutionStatus": "UNAVAILABLE" if failed else "AVAILABLE",
        "StatusReason": (plan["fail"] if isinstance(plan, dict) else NO_CHANGES)
        if failed
        else None,
        "Changes": [] if failed else [{"ResourceChange": c} for c in plan],
    }
    print(json.dumps({"Id": change_set_id}))
    return 0


def _execute(state: dict[str, Any], args: list[str]) -> int:
    change_set = _find_change_set(state, args)
    if change_set is None:
        return _fail("ChangeSet does not exist")
    if change_set["ExecutionStatus"] != "AVAILABLE":
        return _fail(f"ChangeSet is in {change_set['ExecutionStatus']} state")
    name = change_set["StackName"]
    stack = state["stacks"][name]
    creating = stack["status"] == "REVIEW_IN_PROGRESS"
    token = _option(args, "--client-request-token")
    failure = state["executions"].get(name, {}).get("fail")
    if failure:
        resource, reason = failure
        stack["status"] = (
            "ROLLBACK_COMPLETE" if creating else "UPDATE_ROLLBACK_COMPLETE"
        )
        events = [  # newest first: the cause is the oldest failure
            (name, stack["status"], None),
            ("Other", "UPDATE_FAILED", "Resource update cancelled"),
            (resource, "UPDATE_FAILED", reason),
        ]
    else:
        stack["status"] = "CREATE_COMPLETE" if creating else "UPDATE_COMPLETE"
        events = [(name, stack["status"], None)]
    stack["events"][:0] = [
        {
            "ClientRequestToken": token,
            "LogicalResourceId": resource,
            "ResourceStatus": status,
            "ResourceStatusReason": reason,
        }
        for resource, status, reason in events
    ]
    state["change_sets"] = {
        key: c for key, c in state["change_sets"].items() if c["StackName"] != name
    }
    return 0


def _wait(state: dict[str, Any], args: list[str]) -> int:
    what = args[2]
    if what == "change-set-create-complete":
        change_set = _find_change_set(state, args)
        ok = change_set is not None and change_set["Status"] == "CREATE_COMPLETE"
    else:
        stack = state["stacks"].get(_option(args, "--stack-name") or "")
        wanted = {"stack-create-complete": "CREATE_COMPLETE"}.get(
            what, "UPDATE_COMPLETE"
        )
        ok = stack is not None and stack["status"] == wanted
    if not ok:
        print("Waiter encountered a terminal failure state", file=sys.stderr)
        return 255
    return 0


def call(state: dict[str, Any], args: list[str]) -> int:
    """Answer one ``aws`` call (``args`` without the program name)."""
    state["calls"].append(args)
    if args[:2] == ["secretsmanager", "describe-secret"]:
        secret = state["secrets"].get(_option(args, "--secret-id"))
        if secret is None:
            return _fail("Secrets Manager can't find the specified secret.")
        _answer(args, secret)
        return 0
    if args[0] != "cloudformation":
        return _fail(f"the stand-in answers CloudFormation only, not {args[0]}")
    command = args[1]
    stack_name = _option(args, "--stack-name")
    if command == "describe-stacks":
        stack = state["stacks"].get(stack_name or "")
        if stack is None:
            return _fail(f"Stack with id {stack_name} does not exist")
        _answer(
            args,
            {"Stacks": [{"StackName": stack_name, "StackStatus": stack["status"]}]},
        )
    elif command == "describe-stack-events":
        stack = state["stacks"].get(stack_name or "")
        if stack is None:
            return _fail(f"Stack [{stack_name}] does not exist")
        _answer(args, {"StackEvents": stack["events"]})
    elif command == "validate-template":
        path = (_option(args, "--template-body") or "").removeprefix("file://")
        declared = yaml.load(Path(path).read_text(), _TagsIgnored).get("Parameters")
        _answer(
            args,
            {
                "Parameters": [
                    {
                        "ParameterKey": key,
                        **(
                            {"DefaultValue": str(s["Default"])}
                            if "Default" in s
                            else {}
                        ),
                    }
                    for key, s in (declared or {}).items()
                ]
            },
        )
    elif command == "create-change-set":
        return _create_change_set(state, args)
    elif command == "describe-change-set":
        change_set = _find_change_set(state, args)
        if change_set is None:
            return _fail(
                f"ChangeSet [{_option(args, '--change-set-name')}] does not exist"
            )
        _answer(args, change_set)
    elif command == "delete-change-set":
        change_set = _find_change_set(state, args)
        if change_set is None:
            return _fail("ChangeSet does not exist")
        del state["change_sets"][change_set["ChangeSetId"]]
    elif command == "execute-change-set":
        return _execute(state, args)
    elif command == "wait":
        return _wait(state, args)
    else:
        return _fail(f"the stand-in does not answer {command}")
    return 0


def main() -> int:
    path = Path(os.environ["FAKE_AWS_STATE"])
    state = json.loads(path.read_text())
    for key in ("stacks", "change_sets", "plans", "executions", "secrets"):
        state.setdefault(key, {})
    state.setdefault("calls", [])
    try:
        return call(state, sys.argv[1:])
    finally:
        path.write_text(json.dumps(state, indent=2))


if __name__ == "__main__":
    sys.exit(main())
