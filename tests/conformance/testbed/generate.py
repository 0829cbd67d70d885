#!/usr/bin/env python3
"""Writes the flagd-testbed cases in ringfence's own test format, from a testbed checkout.

    python3 tests/conformance/testbed/generate.py /path/to/flagd-testbed

Reads the testbed's gherkin features (gherkin/*.feature and evaluator/gherkin/*.feature) and
writes, next to this file:

- cases.json: one case per scenario (one per Examples row of an outline) that applies to an
  OFREP server, in the format of ../cases.json (flag, type, code default, context, what the
  application must get back), plus the flag set and the fractional bucketing it runs with;
  and the scenarios that do not apply, each with the reason;
- flags/: the testbed's flag files, copied unchanged, and allFlags.json, merged from them the
  way the testbed's launchpad merges them (every flags/*.json but selector-*, in name order).

Run it again when the testbed moves to a new version; the tests read only the output. Python 3
standard library only.
"""

import json
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The feature files and what they test, in the order the report lists them.
SUITES = [
    "gherkin/evaluation.feature",
    "gherkin/targeting.feature",
    "gherkin/disabled.feature",
    "gherkin/metadata.feature",
    "evaluator/gherkin/evaluation.feature",
    "evaluator/gherkin/targeting.feature",
    "evaluator/gherkin/evaluator-refs.feature",
    "evaluator/gherkin/disabled.feature",
    "evaluator/gherkin/metadata.feature",
    "evaluator/gherkin/no-default-variant.feature",
    "evaluator/gherkin/errors.feature",
    "evaluator/gherkin/zero-values.feature",
    "evaluator/gherkin/fractional.feature",
    "evaluator/gherkin/semver.feature",
    "evaluator/gherkin/string.feature",
]

# Whole feature files that test a flagd provider rather than what a flag evaluates to.
NOT_APPLICABLE_FILES = {
    "gherkin/config.feature": "provider options and environment variables of the flagd providers (host, port, "
    "resolver, TLS, cache...): an OFREP client is configured with a URL and headers",
    "gherkin/connection.feature": "gRPC connection loss and reconnection of the flagd providers; OFREP is stateless "
    "HTTP (the router keeps serving its last table while the server is down)",
    "gherkin/events.feature": "provider events of the flagd providers' gRPC streams (ready, error, stale); OFREP "
    "server providers have no event stream",
    "gherkin/rpc-caching.feature": "the RPC provider's LRU cache invalidated by flagd's event stream",
    "gherkin/contextEnrichment.feature": "context enrichment from the in-process sync stream's metadata",
    "gherkin/sync-payload.feature": "the in-process provider's sync payload",
    "gherkin/selector.feature": "the in-process provider's flag-set selector on flagd's sync API (each workload's "
    "router serves one flag set per release; the selector scenarios of disabled.feature and metadata.feature run "
    "against a workload serving the selected file instead)",
}

# Single scenarios that do not apply, by (file, scenario name).
NOT_APPLICABLE_SCENARIOS = {
    (
        "gherkin/evaluation.feature",
        "Resolves flag with no defaultValue correctly",
    ): "@deprecated: the old gRPC protocol answered FLAG_NOT_FOUND for a flag without a default variant; "
    "'Resolves flag with no default variant correctly' (@no-default-variant) replaces it and runs",
}

# What an "option selector" names: a flag set.
SELECTORS = {
    "flags/allFlags.json": "allFlags",
    "rawflags/selector-flags.json": "selector-flags",
    "rawflags/selector-flag-combined-metadata.json": "selector-flag-combined-metadata",
}


def parse_feature(text):
    """A small gherkin reader: tags, Background, Scenario (Outline), Examples with tables,
    steps with data tables. Returns (feature_tags, background_steps, scenarios)."""
    lines = text.splitlines()
    feature_tags, pending_tags = [], []
    background, scenarios = [], []
    current = None  # the scenario being read
    section = None  # "background", "scenario", "examples"
    in_docstring = False
    for raw in lines:
        line = raw.strip()
        if line.startswith('"""'):
            in_docstring = not in_docstring
            continue
        if in_docstring or not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            pending_tags += [t for t in line.split() if t.startswith("@")]
            continue
        if line.startswith("Feature:"):
            feature_tags, pending_tags = pending_tags, []
            continue
        if line.startswith("Background:"):
            section, pending_tags = "background", []
            continue
        m = re.match(r"(Scenario Outline|Scenario Template|Scenario|Example):\s*(.*)", line)
        if m:
            current = {"name": m.group(2).strip(), "tags": pending_tags, "steps": [], "examples": []}
            scenarios.append(current)
            section, pending_tags = "scenario", []
            continue
        m = re.match(r"(Examples|Scenarios):\s*(.*)", line)
        if m:
            current["examples"].append({"name": m.group(2).strip(), "tags": pending_tags, "rows": []})
            section, pending_tags = "examples", []
            continue
        if line.startswith("|"):
            cells = split_row(line)
            if section == "examples":
                current["examples"][-1]["rows"].append(cells)
            else:
                steps = background if section == "background" else current["steps"]
                steps[-1]["table"].append(cells)
            continue
        m = re.match(r"(Given|When|Then|And|But|\*)\s+(.*)", line)
        if m:
            step = {"text": m.group(2), "table": []}
            (background if section == "background" else current["steps"]).append(step)
            continue
        raise ValueError(f"unexpected line: {raw!r}")
    return feature_tags, background, scenarios


def split_row(line):
    """The cells of a table row; gherkin escapes are \\|, \\\\ and \\n."""
    cells, cell, i = [], "", 1
    body = line.strip()
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            cell += {"|": "|", "\\": "\\", "n": "\n"}.get(nxt, "\\" + nxt)
            i += 2
            continue
        if c == "|":
            cells.append(cell.strip())
            cell = ""
        else:
            cell += c
        i += 1
    return cells


def typed(kind, text):
    """A gherkin value of a step's declared type, as the flagd providers' step definitions read it."""
    kind = kind.lower()
    if kind == "boolean":
        return text.strip().lower() == "true"
    if kind == "integer":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "object":
        return json.loads(text.replace('\\"', '"')) if text else {}
    return text


def scenario_cases(path, feature_tags, background, scenario):
    """The runs of one scenario: (tags, example name, row number, substituted steps)."""
    if not scenario["examples"]:
        yield feature_tags + scenario["tags"], "", 0, background + scenario["steps"]
        return
    for ex in scenario["examples"]:
        header, *rows = ex["rows"]
        for n, row in enumerate(rows, 1):
            values = dict(zip(header, row))

            def sub(s):
                return re.sub(r"<([^>]+)>", lambda m: values.get(m.group(1), m.group(0)), s)

            steps = [{"text": sub(s["text"]), "table": [[sub(c) for c in r] for r in s["table"]]}
                     for s in background + scenario["steps"]]
            yield feature_tags + scenario["tags"] + ex["tags"], ex["name"], n, steps


def case_of(path, name, tags, steps):
    """One case from a scenario's steps, or raises NotApplicable."""
    flag_set = "testkit" if path.startswith("evaluator/") else "allFlags"
    case = {"context": {}}
    expect = {}
    for step in steps:
        t = step["text"]
        if m := re.fullmatch(r'an option "selector" of type "String" with value "(.*)"', t):
            flag_set = SELECTORS[m.group(1)]
        elif re.fullmatch(r'an option "cache" of type "CacheType" with value "disabled"', t):
            pass  # OFREP server providers keep no cache
        elif t in ("a stable flagd provider", "an evaluator", "a metadata flagd provider"):
            pass
        elif m := re.fullmatch(r'a (\w+)-flag with key "(.*)" and a (?:default|fallback) value "(.*)"', t):
            kind, key, default = m.groups()
            case["flag"], case["type"] = key, kind.lower()
            case["default"] = typed(kind, default)
        elif m := re.fullmatch(r'a context containing a key "(.*)", with type "(\w+)" and with value "(.*)"', t):
            k, kind, v = m.groups()
            case["context"][k] = typed(kind, v)
        elif m := re.fullmatch(r'a context containing a targeting key with value "(.*)"', t):
            case["context"]["targetingKey"] = m.group(1)
        elif m := re.fullmatch(
                r'a context containing a nested property with outer key "(.*)" and inner key "(.*)", with value "(.*)"',
                t):
            outer, inner, v = m.groups()
            case["context"].setdefault(outer, {})[inner] = v
        elif t == "the flag was evaluated with details":
            pass
        elif m := re.fullmatch(r'the resolved details value should be "(.*)"', t):
            expect["value"] = typed(case["type"], m.group(1))
        elif m := re.fullmatch(r'the reason should be "(.*)"', t):
            expect["reason"] = m.group(1)
        elif m := re.fullmatch(r'the error-code should be "(.*)"', t):
            expect["errorCode"] = m.group(1) or None
        elif m := re.fullmatch(r'the variant should be "(.*)"', t):
            expect["variant"] = m.group(1)
        elif t == "the resolved metadata should contain":
            header, *rows = step["table"]
            expect["metadata"] = {r[0]: typed(r[1], r[2]) for r in rows}
        elif t == "the resolved metadata is empty":
            expect["metadataEmpty"] = True
        else:
            raise ValueError(f"{path}: {name}: unknown step {t!r}")
    versions = sorted({t[len("@fractional-"):] for t in tags if re.fullmatch(r"@fractional-v\d", t)})
    if len(versions) > 1:
        raise ValueError(f"{path}: {name}: several bucketing versions {versions}")
    case["flagSet"] = flag_set
    # Bucketing-specific scenarios run with their bucketing; the others with flagd's current one.
    case["bucketing"] = versions[0] if versions else "v3"
    case["expect"] = expect
    return case


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    testbed = Path(sys.argv[1])
    version = (testbed / "version.txt").read_text().strip()

    out_flags = HERE / "flags"
    shutil.rmtree(out_flags, ignore_errors=True)
    out_flags.mkdir()
    merged = {}
    for f in sorted((testbed / "flags").glob("*.json")):
        shutil.copyfile(f, out_flags / f.name)
        if not f.name.startswith("selector-"):
            deep_merge(merged, json.loads(f.read_text()))
    shutil.copyfile(testbed / "evaluator/flags/testkit-flags.json", out_flags / "evaluator-testkit-flags.json")
    (out_flags / "allFlags.json").write_text(json.dumps(merged, indent=2, sort_keys=True, ensure_ascii=False) + "\n")

    cases, skipped, seen = [], [], set()
    for path in SUITES:
        feature_tags, background, scenarios = parse_feature((testbed / path).read_text())
        for scenario in scenarios:
            why = NOT_APPLICABLE_SCENARIOS.get((path, scenario["name"]))
            for tags, example, row, steps in scenario_cases(path, feature_tags, background, scenario):
                label = f"{path}: {scenario['name']}" + (f" [{example or 'examples'} #{row}]" if row else "")
                if label in seen:
                    raise ValueError(f"duplicate case name {label}")
                seen.add(label)
                if why:
                    skipped.append({"name": label, "why": why})
                    continue
                case = case_of(path, label, tags, steps)
                cases.append({"name": label, "suite": path, "tags": sorted(set(tags)), **case})
    for path, why in NOT_APPLICABLE_FILES.items():
        tags, background, scenarios = parse_feature((testbed / path).read_text())
        runs = sum(1 for sc in scenarios for _ in scenario_cases(path, tags, background, sc))
        skipped.append({"name": path, "why": why, "scenarios": runs})

    doc = {
        "about": "The flagd-testbed scenarios that apply to an OFREP server, in ringfence's case format "
        "(see ../cases.json), written by generate.py from flagd-testbed " + version + ". `flagSet` names the "
        "file of flags/ the workload's release carries, `bucketing` the fractional bucketing it records "
        "(\"$ringfence\": {\"fractional\": ...}). `notApplicable` lists what does not apply, with why.",
        "testbed": version,
        "cases": cases,
        "notApplicable": skipped,
    }
    (HERE / "cases.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(cases)} cases, {len(skipped)} not applicable, from flagd-testbed {version}")


def deep_merge(dst, src):
    """launchpad/pkg/json.go deepMerge: objects merge, anything else is replaced."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            deep_merge(dst[k], v)
        else:
            dst[k] = v
    return dst


if __name__ == "__main__":
    main()
