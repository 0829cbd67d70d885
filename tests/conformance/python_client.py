"""OFREP conformance through the real Python client: openfeature-sdk + openfeature-provider-ofrep.

Run by crates/ringfence/tests/it/flags.rs against a workload's router:

    OFREP_URL=http://127.0.0.1:PORT OFREP_TOKEN=secret python python_client.py

Evaluates every case of cases.json (next to this file) through the SDK and compares what the
application gets (value, variant, reason, error code, metadata) with the expectation. With
OFREP_TOKEN set it also checks authentication: bearer token, X-API-Key, and refusal without
or with a wrong token. Prints one JSON report on stdout; exits 1 when any check failed, 2 when
it could not run at all.
"""

import json
import os
import sys
from pathlib import Path

CLIENT = "python"


def fail_setup(message):
    print(f"python_client.py: {message}", file=sys.stderr)
    sys.exit(2)


try:
    from importlib.metadata import version

    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider
    from openfeature.evaluation_context import EvaluationContext
except ImportError as e:
    fail_setup(
        f"{e}; install the pinned clients: python3 -m venv tests/conformance/.venv && "
        "tests/conformance/.venv/bin/pip install -r tests/conformance/requirements.txt"
    )


def plain(x):
    """Enum members (Reason, ErrorCode) as their string values."""
    return getattr(x, "value", x)


def context_of(raw):
    attrs = {k: v for k, v in raw.items() if k != "targetingKey"}
    # A non-string targetingKey is passed as is: the "bad context" case sends one on purpose.
    return EvaluationContext(targeting_key=raw.get("targetingKey"), attributes=attrs)


def same(a, b):
    """JSON equality that also tells 1 from 1.0 and true from 1 (Python's == does not)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def evaluate(client, case):
    getter = {
        "boolean": client.get_boolean_details,
        "string": client.get_string_details,
        "integer": client.get_integer_details,
        "float": client.get_float_details,
        "object": client.get_object_details,
    }[case["type"]]
    d = getter(case["flag"], case["default"], context_of(case["context"]))
    return {
        "value": d.value,
        "variant": d.variant,
        "reason": plain(d.reason),
        "errorCode": plain(d.error_code),
        "errorMessage": d.error_message,
        "metadata": dict(d.flag_metadata or {}),
    }


def check(got, want):
    """The differences between what the application got and what it should have got."""
    problems = []
    if "value" in want and not same(got["value"], want["value"]):
        problems.append(f"value {got['value']!r} ({type(got['value']).__name__}), want {want['value']!r}")
    for field in ("variant", "reason", "errorCode"):
        if field in want and got[field] != want[field]:
            problems.append(f"{field} {got[field]!r}, want {want[field]!r}")
    for k, v in want.get("metadata", {}).items():
        if not same(got["metadata"].get(k), v):
            problems.append(f"metadata[{k!r}] {got['metadata'].get(k)!r}, want {v!r}")
    if want.get("metadataEmpty") and got["metadata"]:
        problems.append(f"metadata {got['metadata']!r}, want none")
    return problems


def provider(url, headers=None):
    return OFREPProvider(url, headers_factory=(lambda: dict(headers)) if headers else None, timeout=5.0)


def main():
    url = os.environ.get("OFREP_URL")
    if not url:
        fail_setup("set OFREP_URL to the router's base URL, e.g. http://127.0.0.1:8080")
    token = os.environ.get("OFREP_TOKEN") or None
    cases_path = Path(os.environ.get("OFREP_CASES") or Path(__file__).with_name("cases.json"))
    cases = json.loads(cases_path.read_text())["cases"]

    auth = {"Authorization": f"Bearer {token}"} if token else None
    api.set_provider(provider(url, auth), "main")
    client = api.get_client("main")

    results = []
    for case in cases:
        quirk = case.get("quirks", {}).get(CLIENT)
        want = quirk["expect"] if quirk else case["expect"]
        try:
            got = evaluate(client, case)
            problems = check(got, want)
        except Exception as e:  # a client that raises instead of answering is a failure too
            got, problems = None, [f"the SDK raised {type(e).__name__}: {e}"]
        results.append({"name": case["name"], "ok": not problems, "problems": problems, "got": got,
                        "quirk": quirk["why"] if quirk else None})

    if token:
        probe = {"flag": "bool-static", "type": "boolean", "default": False, "context": {"targetingKey": "auth"}}
        for name, headers, ok in [
            ("auth: X-API-Key", {"X-API-Key": token}, True),
            ("auth: bearer token", {"Authorization": f"Bearer {token}"}, True),
            ("auth: no credentials are refused", None, False),
            ("auth: a wrong token is refused", {"Authorization": "Bearer not-the-token"}, False),
        ]:
            domain = f"auth-{len(results)}"
            api.set_provider(provider(url, headers), domain)
            got = evaluate(api.get_client(domain), probe)
            want = ({"value": True, "reason": "STATIC", "errorCode": None} if ok else
                    {"value": False, "reason": "ERROR", "errorCode": "GENERAL"})
            problems = check(got, want)
            if not ok and "unauthorized" not in (got["errorMessage"] or ""):
                problems.append(f"error message {got['errorMessage']!r} does not say unauthorized (HTTP 401)")
            results.append({"name": name, "ok": not problems, "problems": problems, "got": got, "quirk": None})

    failed = [r for r in results if not r["ok"]]
    report = {
        "client": CLIENT,
        "packages": {p: version(p) for p in ("openfeature-sdk", "openfeature-provider-ofrep", "requests")},
        "passed": len(results) - len(failed),
        "failed": len(failed),
        "results": results,
    }
    print(json.dumps(report, indent=1, default=str))
    for r in failed:
        print(f"FAIL {r['name']}: {'; '.join(r['problems'])}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
