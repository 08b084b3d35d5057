"""The ``configurations`` section of a scenario: which configurations a run compares.

Each item is the name of one of Table 5's five configurations (``testbed.configs.table5``,
built for the scenario's model and bottleneck channels) or a mapping of its own
(``testbed.configs.Configuration``'s fields); names must be unique within the scenario.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from testbed.checks import BAD, NAME, NAME_RE, Checker, describe, join, suggest
from testbed.configs import COMPRESSIONS, TABLE5_NAMES, Configuration, table5
from testbed.models import catalog

CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(Configuration))


def parse_configurations(
    ck: Checker, raw: Any, model: Any, n_ch: Any
) -> tuple[Configuration, ...] | None:
    """The ``configurations`` list: Table 5 names or explicit mappings, each checked."""
    items = ck.sequence(raw, "configurations")
    if items is None:
        return None
    table5_ok = model is not BAD and n_ch is not BAD
    built = table5(model, n_ch) if table5_ok else {}
    out: list[Configuration | None] = []
    names: dict[str, int] = {}
    for i, item in enumerate(items):
        path = join("configurations", i)
        config: Configuration | None = None
        if isinstance(item, str):
            if item not in TABLE5_NAMES:
                ck.error(
                    path,
                    f"expected a Table-5 configuration ({', '.join(TABLE5_NAMES)}) or a mapping, "
                    f"got {item!r}{suggest(item, TABLE5_NAMES)}",
                )
            elif table5_ok:
                config = built[item]
                problems = config.problems()
                for problem in problems:
                    ck.error(path, f"{item} with model {model}: {problem}")
                if problems:
                    config = None
        elif isinstance(item, dict):
            config = _parse_configuration(ck, item, path, model)
        else:
            ck.error(
                path, f"expected a Table-5 configuration name or a mapping, got {describe(item)}"
            )
        if config is not None:
            if config.name in names:
                ck.error(
                    join(path, "name") if isinstance(item, dict) else path,
                    f"duplicate configuration name {config.name!r} "
                    f"(also configurations[{names[config.name]}])",
                )
                config = None
            else:
                names[config.name] = i
        out.append(config)
    if any(c is None for c in out):
        return None
    return tuple(c for c in out if c is not None)


def _parse_configuration(ck: Checker, item: dict, path: str, model: Any) -> Configuration | None:
    data = ck.mapping(item, path, CONFIG_KEYS, required=("name", "mode"))
    if data is None:
        return None
    n0 = len(ck.problems)
    values: dict[str, Any] = {}
    p = lambda k: join(path, k)  # noqa: E731
    if data.get("name") is not None:
        values["name"] = ck.get(data, "name", path, ck.string, pattern=NAME_RE, what=NAME)
    for key in ("mode", "kind", "compression"):
        if data.get(key) is not None:
            values[key] = ck.string(data[key], p(key))
    if data.get("model") is not None:
        values["model"] = ck.string(data["model"], p("model"))
    elif model is BAD:
        return None  # the scenario-level model's problem is already reported
    else:
        values["model"] = model
    if data.get("split") is not None:
        split = data["split"]
        if isinstance(split, bool) or not isinstance(split, (int, str)):
            values["split"] = ck.error(
                p("split"), f"expected a split point name or 1-based index, got {describe(split)}"
            )
        else:
            values["split"] = split
    if data.get("n_ch") is not None:
        values["n_ch"] = ck.integer(data["n_ch"], p("n_ch"), minimum=1)
    if data.get("quantize") is not None:
        values["quantize"] = ck.boolean(data["quantize"], p("quantize"))
    if data.get("jpeg_quality") is not None:
        values["jpeg_quality"] = ck.get(
            data, "jpeg_quality", path, ck.integer, minimum=1, maximum=100
        )
    if data.get("jpeg_size") is not None:
        values["jpeg_size"] = ck.get(data, "jpeg_size", path, ck.integer, minimum=32, maximum=2048)
    if data.get("weights") is not None:
        values["weights"] = ck.string(data["weights"], p("weights"))
    if len(ck.problems) > n0 or "name" not in values or "mode" not in values:
        return None
    config = Configuration(**values)
    problems = config.problems()
    for problem in problems:
        key, sep, message = problem.partition(": ")
        if sep and key in CONFIG_KEYS:
            value = getattr(config, key)
            if isinstance(value, str) and ("expected one of" in message or key == "split"):
                message += suggest(value, _choices(config, key))
            ck.error(p(key), message)
        else:
            ck.error(path, problem)
    if problems:
        return None
    return config.validated()


def _choices(config: Configuration, key: str) -> tuple[str, ...]:
    if key == "mode":
        return catalog.MODES
    if key == "model":
        return tuple(catalog.MODELS)
    if key == "kind":
        return catalog.KINDS
    if key == "compression":
        return COMPRESSIONS
    if key == "split":
        try:
            return catalog.split_points(config.model, config.kind)
        except KeyError:
            return ()
    return ()
