#!/usr/bin/env python3
"""Validates OCSF events against the OCSF server's own compiled export of one
OCSF version, with the rules of the OCSF server's event validator.

Usage: ocsf_validate.py --version 1.8.0 EVENTS.json
       ocsf_validate.py --version 1.8.0 --serve

EVENTS.json is a JSON array of {"label": "...", "event": {...}}; the label
(e.g. the sink's personal-data mode) is printed with every problem. Exit status
0: every event is valid; 1: at least one is not (one line per problem on
standard output, naming the label, the authlog event type, the class and the
attribute path); 2: bad usage or input. With --serve, one such item per line
on standard input is answered by one line on standard output,
{"problems": [...]} (empty: valid), so that a test starts one process for all
its events.

The export is the one the PyPI package ocsf-json-schema bundles (downloaded
from the OCSF server's /export/schema, /export/v2/schema for 1.8.0); the
package turns it into a JSON Schema per class and profile set: attributes,
types (regex, max_len, range), enums, `required`, unknown attributes
(`additionalProperties: false`), attributes of profiles that
`metadata.profiles` does not name (left out, so unknown), and the object and
class constraints `at_least_one` (anyOf) and `just_one` (oneOf).

What the OCSF validator checks and a JSON Schema cannot express, checked here
from the same export:

* `metadata.version` is the version validated against;
* every name in `metadata.profiles` is a profile of the export that applies to
  the class;
* `type_uid` is `class_uid` * 100 + `activity_id`;
* an enum's sibling (`activity_name`, `type_name`, `severity`, `status`,
  `class_name`, `category_name`, `type`, `factor_type`, ...) is the caption of
  its value; for 99 Other it is present and is not `Other`. (The OCSF
  validator only warns about a scalar sibling that does not match: here it is
  an error.);
* no deprecated class, object, attribute or enum value is used (a warning in
  the OCSF validator, an error here).
"""

import argparse
import json
import sys

try:
    from jsonschema import Draft202012Validator
    from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema, get_packaged_versions
except ImportError as e:  # pragma: no cover - an old test venv
    print(
        f"ocsf_validate.py: {e}: this Python lacks the packages of tests/interop/requirements.txt"
        " (ocsf-json-schema, jsonschema); install them, e.g. remove target/interop-venv and run"
        " tests/run.sh again",
        file=sys.stdout,
    )
    sys.exit(2)


def attr_profiles(attribute):
    """The profiles an attribute belongs to (empty: every event has it)."""
    if "profiles" in attribute:  # v2 export (1.8.0 on): a list or null
        return list(attribute.get("profiles") or [])
    profile = attribute.get("profile")  # v1 export: a string or null
    return [profile] if profile else []


def allowed(attribute, profiles):
    own = attr_profiles(attribute)
    return not own or any(p in profiles for p in own)


def dotted(parent, key):
    return f"{parent}.{key}" if parent else str(key)


def path_of(parts):
    out = ""
    for p in parts:
        out = f"{out}[{p}]" if isinstance(p, int) else dotted(out, p)
    return out or "(event)"


class Checker:
    def __init__(self, version):
        if version not in get_packaged_versions():
            raise SystemExit(f"ocsf_validate.py: OCSF {version} is not bundled by ocsf-json-schema")
        self.version = version
        self.export = get_ocsf_schema(version=version)
        if self.export.get("version") != version:
            raise SystemExit(f"ocsf_validate.py: the bundled export says {self.export.get('version')}")
        self.generator = OcsfJsonSchemaEmbedded(self.export)
        self.validators = {}
        if "profiles" in self.export:
            self.known_profiles = set(self.export["profiles"])
        else:
            self.known_profiles = set()
            for item in list(self.export["classes"].values()) + list(self.export["objects"].values()):
                for a in item.get("attributes", {}).values():
                    self.known_profiles.update(attr_profiles(a))

    def validator(self, class_name, profiles):
        key = (class_name, tuple(sorted(set(profiles))))
        if key not in self.validators:
            schema = self.generator.get_class_schema(class_name, list(key[1]))
            self.validators[key] = Draft202012Validator(schema)
        return self.validators[key]

    def definition_at(self, cls, parts):
        """The export's class or object definition that holds the attribute at
        `parts` (list of keys and indexes) of an event of class `cls`."""
        definition = cls
        for p in parts:
            if isinstance(p, int):
                continue
            a = definition.get("attributes", {}).get(p)
            if a is None or a.get("type") != "object_t":
                return None
            definition = self.export["objects"].get(a["object_type"])
            if definition is None:
                return None
        return definition

    def check(self, event):
        """The problems of one event: [(attribute path, message)]."""
        problems = []
        if not isinstance(event, dict):
            return [("(event)", "not a JSON object")]
        uid = event.get("class_uid")
        try:
            class_name = self.generator.lookup_class_name_from_uid(uid)
        except ValueError:
            return [("class_uid", f"no class {uid!r} in OCSF {self.version}")]
        cls = self.export["classes"][class_name]
        metadata = event.get("metadata") if isinstance(event.get("metadata"), dict) else {}
        profiles = metadata.get("profiles") or []
        if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
            problems.append(("metadata.profiles", "not an array of profile names"))
            profiles = []
        for i, p in enumerate(profiles):
            if p not in self.known_profiles:
                problems.append((f"metadata.profiles[{i}]", f"no profile {p!r} in OCSF {self.version}"))
            elif "profiles" in cls and p not in (cls.get("profiles") or []):
                problems.append((f"metadata.profiles[{i}]", f"profile {p!r} does not apply to class {class_name}"))
        if metadata.get("version") != self.version:
            problems.append(("metadata.version", f"is {metadata.get('version')!r}, validated against {self.version!r}"))
        a, c, t = event.get("activity_id"), event.get("class_uid"), event.get("type_uid")
        if all(isinstance(x, int) for x in (a, c, t)) and t != c * 100 + a:
            problems.append(("type_uid", f"is {t}, expected class_uid * 100 + activity_id = {c * 100 + a}"))
        if "@deprecated" in cls:
            problems.append(("class_uid", f"class {class_name} is deprecated"))

        # The compiled JSON Schema of the class with these profiles.
        for error in sorted(self.validator(class_name, profiles).iter_errors(event), key=lambda e: list(e.absolute_path)):
            parts = list(error.absolute_path)
            if error.validator == "additionalProperties" and isinstance(error.instance, dict):
                definition = self.definition_at(cls, parts) or {}
                known = set(error.schema.get("properties", {}))
                for key in sorted(k for k in error.instance if k not in known):
                    a = definition.get("attributes", {}).get(key)
                    where = "class " + class_name if not parts else "object " + str(definition.get("name", "?"))
                    if a is not None and attr_profiles(a):
                        msg = (f"attribute {key!r} of {where} exists only in profile(s) {attr_profiles(a)},"
                               f" which metadata.profiles {profiles} does not name")
                    else:
                        msg = f"unknown attribute: {key!r} is not defined in {where}"
                    problems.append((path_of(parts + [key]), msg))
            elif error.validator in ("anyOf", "oneOf") and all(
                set(s) == {"required"} for s in error.validator_value
            ):
                names = [s["required"][0] for s in error.validator_value]
                present = [n for n in names if isinstance(error.instance, dict) and n in error.instance]
                rule = "at_least_one" if error.validator == "anyOf" else "just_one"
                problems.append((path_of(parts), f"constraint {rule} {names} failed: present {present}"))
            else:
                problems.append((path_of(parts), error.message))

        # What the JSON Schema does not say: enum siblings and deprecation.
        self.walk(event, cls, [], profiles, problems)
        return problems

    def walk(self, item, definition, parts, profiles, problems):
        attributes = definition.get("attributes", {})
        for key, value in item.items():
            a = attributes.get(key)
            if a is None or not allowed(a, profiles) or value is None:
                continue  # reported by the JSON Schema
            here = parts + [key]
            if "@deprecated" in a:
                problems.append((path_of(here), f"attribute is deprecated: {a['@deprecated']}"))
            enum = a.get("enum")
            if enum:
                values = value if a.get("is_array") and isinstance(value, list) else [value]
                sibling = a.get("sibling")
                siblings = item.get(sibling) if sibling else None
                for i, v in enumerate(values):
                    entry = enum.get(str(v)) if isinstance(v, (int, str)) and not isinstance(v, bool) else None
                    if entry is None:
                        continue  # reported by the JSON Schema
                    at = path_of(here + [i]) if a.get("is_array") else path_of(here)
                    if "@deprecated" in entry:
                        problems.append((at, f"enum value {v!r} is deprecated: {entry['@deprecated']}"))
                    if not sibling:
                        continue
                    s = siblings[i] if a.get("is_array") and isinstance(siblings, list) and i < len(siblings) else (
                        None if a.get("is_array") else siblings
                    )
                    s_at = path_of(parts + [sibling] + ([i] if a.get("is_array") else []))
                    if v == 99:
                        if s is None:
                            problems.append((s_at, f"missing: {at} is 99 Other, its sibling must give the source value"))
                        elif s == entry.get("caption"):
                            problems.append((s_at, f"is {s!r} for {at} 99: give the source value, not the caption"))
                    elif s is not None and s != entry.get("caption"):
                        problems.append((s_at, f"is {s!r}, the caption of {at} {v!r} is {entry.get('caption')!r}"))
            if a.get("type") == "object_t":
                obj = self.export["objects"].get(a.get("object_type"), {})
                if "@deprecated" in obj:
                    problems.append((path_of(here), f"object {obj.get('name')} is deprecated: {obj['@deprecated']}"))
                if a.get("is_array") and isinstance(value, list):
                    for i, element in enumerate(value):
                        if isinstance(element, dict):
                            self.walk(element, obj, here + [i], profiles, problems)
                elif isinstance(value, dict):
                    self.walk(value, obj, here, profiles, problems)


def report(checker, item, n):
    """The problems of one {label, event} item, as lines."""
    event = item.get("event") if isinstance(item, dict) else None
    label = item.get("label", f"#{n}") if isinstance(item, dict) else f"#{n}"
    problems = checker.check(event)
    meta = event.get("metadata", {}) if isinstance(event, dict) else {}
    event_type = meta.get("event_code", "?") if isinstance(meta, dict) else "?"
    cls = f"{event.get('class_name', '?')} {event.get('class_uid', '?')}" if isinstance(event, dict) else "?"
    return [f"{label}: {event_type} ({cls}): {path}: {message}" for path, message in problems]


def serve(checker):
    for n, line in enumerate(sys.stdin):
        if not line.strip():
            continue
        try:
            lines = report(checker, json.loads(line), n)
        except ValueError as e:
            lines = [f"#{n}: not JSON: {e}"]
        print(json.dumps({"problems": lines}), flush=True)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", required=True, help="the OCSF version, e.g. 1.8.0")
    parser.add_argument("--serve", action="store_true", help="answer one item per line of standard input")
    parser.add_argument("events", nargs="?", help='a JSON array of {"label": ..., "event": ...}')
    args = parser.parse_args()
    if args.serve:
        return serve(Checker(args.version))
    if not args.events:
        parser.error("give EVENTS.json or --serve")
    try:
        with open(args.events, encoding="utf-8") as f:
            items = json.load(f)
    except (OSError, ValueError) as e:
        print(f"ocsf_validate.py: {args.events}: {e}")
        return 2
    if not isinstance(items, list) or not items:
        print("ocsf_validate.py: expected a non-empty JSON array of events")
        return 2
    checker = Checker(args.version)
    bad = 0
    for n, item in enumerate(items):
        lines = report(checker, item, n)
        if lines:
            bad += 1
            print("\n".join(lines))
    if bad:
        print(f"ocsf_validate.py: {bad} of {len(items)} events invalid against OCSF {args.version} (official export)")
        return 1
    print(f"ocsf_validate.py: {len(items)} events valid against OCSF {args.version} (official export)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
