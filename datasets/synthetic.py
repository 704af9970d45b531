"""Seeded synthetic search logs: queries of five types, several items per query, gold labels
from the atomic-rule knowledge base, and the trace of fired rules and step verdicts per pair.

For each item a target level is drawn from the label mix and an item is built to reach it; the
judge (not the builder) decides the label, and a build that misses its target is redrawn, so
every label is exactly what the rules say.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict
from typing import Any, Callable, Iterator, Mapping, TypeVar

from taosr.datasets.catalogue import PRODUCT_TYPES, ProductType
from taosr.datasets.knowledge import Intent, Item, judge
from taosr.labels import LEVELS

K = TypeVar("K")

QUERY_TYPES = ("plain", "negation", "alternative", "question_answer", "knowledge")

# (device, connector, rule) for charger/cable knowledge queries.
_DEVICE_PORTS = [
    ("iphone 15", "USB-C", "KN-01"),
    ("iphone 14", "Lightning", "KN-02"),
    ("iphone 13", "Lightning", "KN-03"),
    ("galaxy s24", "USB-C", "KN-04"),
    ("pixel 8", "USB-C", "KN-05"),
    ("samsung a54", "USB-C", "KN-06"),
]
_CONTROLLER_PORTS = [
    ("ps5 controller", "USB-C", "KN-07"),
    ("ps4 controller", "Micro-USB", "KN-08"),
    ("nintendo switch", "USB-C", "KN-09"),
]
_PRINTERS = [
    ("hp deskjet 2755", "HP 67", "KN-10"),
    ("canon pixma ts3520", "Canon PG-275", "KN-11"),
    ("epson ecotank et-2800", "Epson 502", "KN-12"),
]
_COFFEE = [
    ("keurig", "K-Cup", "KN-13"),
    ("nespresso vertuo", "Nespresso Vertuo", "KN-14"),
    ("nespresso original", "Nespresso Original", "KN-15"),
]
_BULBS = [("chandelier", "E12", "KN-16"), ("table lamp", "E26", "KN-17"), ("track lighting", "GU10", "KN-18")]

# (name in queries, product type, brand, reference price, rule)
_REFERENCES = [
    ("dyson airwrap", "hair_styler", "Dyson", 599.0, "REF-01"),
    ("airpods pro", "earbuds", "Apple", 249.0, "REF-02"),
    ("stanley quencher", "tumbler", "Stanley", 45.0, "REF-03"),
    ("lululemon align leggings", "leggings", "Lululemon", 98.0, "REF-04"),
    ("kitchenaid artisan mixer", "stand_mixer", "KitchenAid", 449.0, "REF-05"),
    ("herman miller aeron", "office_chair", "Herman Miller", 1395.0, "REF-06"),
    ("sony wh-1000xm5", "headphones", "Sony", 399.0, "REF-07"),
]

# (query wordings, suitable types, required attribute values, rule)
_NEEDS: list[tuple[tuple[str, ...], tuple[str, ...], dict[str, tuple[str, ...]], str]] = [
    (
        ("what to wear to a beach wedding", "beach wedding guest outfit ideas"),
        ("dress", "linen_shirt", "sandals"),
        {"material": ("linen", "cotton", "chiffon")},
        "NEED-01",
    ),
    (
        ("what do i need for hiking in the rain", "gear for rainy day hikes"),
        ("rain_jacket", "hiking_boots"),
        {"waterproof": ("yes",)},
        "NEED-02",
    ),
    (("what do newborns need", "essentials for a newborn baby"), ("swaddle", "baby_bottle"), {}, "NEED-03"),
    (("how to set up a home office", "work from home setup essentials"), ("desk", "office_chair"), {}, "NEED-04"),
    (
        ("what to bring on a first camping trip", "camping essentials for beginners"),
        ("tent", "sleeping_bag", "headlamp"),
        {},
        "NEED-05",
    ),
    (("what do i need to start running", "beginner running gear"), ("running_shoes", "leggings"), {}, "NEED-06"),
    (
        ("gift ideas for a coffee lover", "what to buy someone who loves coffee"),
        ("coffee_pods", "tumbler"),
        {},
        "NEED-07",
    ),
    (
        ("what to bring on a long flight", "long haul flight essentials"),
        ("earbuds", "headphones"),
        {"noise_cancelling": ("yes",)},
        "NEED-08",
    ),
]

_NEGATION_FORMS = ("{phrase} not {value}", "{phrase} without {value}", "non {value} {phrase}", "{phrase} no {value}")
_NEGATABLE = {"color", "material", "noise_cancelling", "waterproof"}
_HTML_DESCRIPTIONS = (
    "<p>{title}.</p><ul>{bullets}</ul>",
    '<div class="desc"><b>{title}</b><br/>{bullets_text} &amp; more.</div>',
)


class LogGenerator:
    """Deterministic generator of log rows (dicts in the log schema) for a seed and mixes."""

    def __init__(
        self,
        seed: int = 0,
        label_mix: Mapping | None = None,
        query_type_mix: Mapping | None = None,
        items_per_query: int = 6,
        max_tries: int = 30,
    ):
        self.rng = random.Random(seed)
        self.seed = seed
        self.label_mix = _normalise_mix(label_mix or {4: 0.50, 3: 0.05, 2: 0.36, 1: 0.09}, key=int)
        self.type_mix = _normalise_mix(query_type_mix or {t: 1.0 for t in QUERY_TYPES}, key=str)
        unknown = set(self.type_mix) - set(QUERY_TYPES)
        if unknown:
            raise ValueError(f"unknown query types in the mix: {sorted(unknown)}; known: {QUERY_TYPES}")
        if items_per_query < 1:
            raise ValueError("items_per_query must be at least 1")
        self.items_per_query = items_per_query
        self.max_tries = max_tries
        self._builders: dict[str, Callable[[], Intent]] = {
            "plain": self._plain,
            "negation": self._negation,
            "alternative": self._alternative,
            "question_answer": self._question_answer,
            "knowledge": self._knowledge,
        }

    def rows(self, count: int) -> Iterator[dict]:
        produced = 0
        query_number = 0
        owed: list[int] = []  # targets an earlier query could not reach; a later one makes them up
        misses_in_a_row = 0
        while produced < count:
            query_type = _draw(self.rng, self.type_mix)
            intent = self._builders[query_type]()
            query_id = f"q{self.seed}-{query_number:06d}"
            query_number += 1
            for position in range(min(self.items_per_query, count - produced)):
                target = owed.pop(0) if owed else _draw(self.rng, self.label_mix)
                built = self._item_for(intent, target, f"{query_id}-{position}")
                if built is None:
                    owed.append(target)
                    misses_in_a_row += 1
                    if misses_in_a_row > 2000:
                        raise ValueError(f"level {target} cannot be generated with query types {sorted(self.type_mix)}")
                    continue
                misses_in_a_row = 0
                item, judgement = built
                yield {
                    "id": f"syn{self.seed}-{produced:07d}",
                    "query_id": query_id,
                    "query": intent.text,
                    "item_id": item.item_id,
                    "title": item.title,
                    "category": item.type.category_path,
                    "attributes": dict(item.attributes),
                    "price": item.price,
                    "description": self._description(item),
                    "label": judgement.level,
                    "query_type": intent.query_type,
                    "rule_ids": list(judgement.rule_ids),
                    "step_annotations": asdict(judgement.reasoning),
                }
                produced += 1

    # ---- queries -------------------------------------------------------------------------
    def _plain(self) -> Intent:
        ptype = self._pick_type()
        required: dict[str, tuple[str, ...]] = {}
        words = [ptype.phrase]
        choices: list[str] = [
            a for a in ("color", "size", "connector", "compatible_model", "capacity", "base") if a in ptype.attributes
        ]
        if choices and self.rng.random() < 0.8:
            name = self.rng.choice(choices)
            value = self.rng.choice(ptype.attributes[name])
            required[name] = (value,)
            words = _with_attribute(words, name, value, self.rng)
        if self.rng.random() < 0.4:
            brand = self.rng.choice(ptype.brands)
            required["brand"] = (brand,)
            words.insert(0, brand.lower())
        secondary: dict[str, str] = {}
        if ptype.secondary and self.rng.random() < 0.3:
            name = self.rng.choice(ptype.secondary)
            if name not in required:
                secondary[name] = self.rng.choice(ptype.attributes[name])
                words.append(secondary[name].lower())
        max_price = None
        if self.rng.random() < 0.2:
            low, high = ptype.price
            max_price = float(round((low + high) / 2, -1) or 10)
            words.append(f"under ${max_price:.0f}")
        summary = _summary(ptype.phrase, required, secondary=secondary, max_price=max_price)
        return Intent(
            " ".join(words),
            "plain",
            (ptype.name,),
            required=required,
            secondary=secondary,
            max_price=max_price,
            summary=summary,
        )

    def _negation(self) -> Intent:
        ptype = self._pick_type(lambda t: any(a in _NEGATABLE for a in t.attributes))
        name = self.rng.choice([a for a in ptype.attributes if a in _NEGATABLE])
        value = self.rng.choice(ptype.attributes[name])
        shown = {"yes": name.replace("_", " "), "no": f"non-{name.replace('_', ' ')}"}.get(value, value)
        text = self.rng.choice(_NEGATION_FORMS).format(phrase=ptype.phrase, value=shown)
        summary = f"a {ptype.phrase} whose {name.replace('_', ' ')} is not {value} (negation)"
        return Intent(text, "negation", (ptype.name,), negated={name: value}, summary=summary)

    def _alternative(self) -> Intent:
        name, type_name, brand, price, rule = self.rng.choice(_REFERENCES)
        form = self.rng.choice(
            ("cheaper alternative to {n}", "{n} dupe", "affordable {n} alternative", "budget alternative to {n}")
        )
        summary = (
            f"a {PRODUCT_TYPES[type_name].phrase} like the {name} from another brand, cheaper than about ${price:.0f}"
        )
        return Intent(
            form.format(n=name),
            "alternative",
            (type_name,),
            alternative_brand=brand,
            alternative_price=price,
            query_rules=(rule,),
            summary=summary,
        )

    def _question_answer(self) -> Intent:
        texts, types, required, rule = self.rng.choice(_NEEDS)
        phrases = ", ".join(PRODUCT_TYPES[t].phrase for t in types)
        summary = f"the need behind the question: items such as {phrases}" + (
            "; " + ", ".join(f"{k.replace('_', ' ')} {'/'.join(v)}" for k, v in required.items()) if required else ""
        )
        return Intent(
            self.rng.choice(texts),
            "question_answer",
            types,
            required=dict(required),
            required_rule={k: rule for k in required},
            query_rules=(rule,),
            summary=summary,
        )

    def _knowledge(self) -> Intent:
        kind = self.rng.choice(("phone", "controller", "printer", "coffee", "bulb"))
        if kind in ("phone", "controller"):
            device, port, rule = self.rng.choice(_DEVICE_PORTS if kind == "phone" else _CONTROLLER_PORTS)
            form = self.rng.choice(("charger for {d}", "{d} charging cable", "{d} charger fast", "cable for {d}"))
            types: tuple[str, ...] = ("charger", "charging_cable")
            required, text = {"connector": (port,)}, form.format(d=device)
            summary = f"a charger or cable for the {device}, which needs {port}"
        elif kind == "printer":
            printer, cartridge, rule = self.rng.choice(_PRINTERS)
            text = self.rng.choice(("ink for {p}", "{p} ink cartridges", "replacement ink {p}")).format(p=printer)
            types, required = ("ink_cartridge",), {"cartridge": (cartridge,)}
            summary = f"ink for the {printer}, which takes {cartridge}"
        elif kind == "coffee":
            machine, system, rule = self.rng.choice(_COFFEE)
            text = self.rng.choice(("pods for {m}", "{m} coffee capsules", "coffee for {m} machine")).format(m=machine)
            types, required = ("coffee_pods",), {"system": (system,)}
            summary = f"coffee pods for a {machine} machine, which takes {system}"
        else:
            fixture, base, rule = self.rng.choice(_BULBS)
            text = self.rng.choice(("bulbs for {f}", "{f} light bulbs", "led bulb for {f}")).format(f=fixture)
            types, required = ("light_bulb",), {"base": (base,)}
            summary = f"light bulbs for a {fixture}, which takes {base}"
        return Intent(
            text,
            "knowledge",
            types,
            required=required,
            required_rule={k: rule for k in required},
            query_rules=(rule,),
            summary=summary,
        )

    # ---- items ---------------------------------------------------------------------------
    def _item_for(self, intent: Intent, target: int, item_id: str):
        """An (item, judgement) whose judged level is ``target``, or None if none was found."""
        for _ in range(self.max_tries):
            item = self._build(intent, target, item_id)
            judgement = judge(intent, item)
            if judgement.level == target:
                return item, judgement
        return None

    def _build(self, intent: Intent, target: int, item_id: str) -> Item:
        rng = self.rng
        wanted = [PRODUCT_TYPES[t] for t in intent.wanted_types]
        if target == 1:
            ptype = self._pick_type(
                lambda t: (
                    all(t.path[:2] != w.path[:2] for w in wanted)
                    and (intent.query_type != "question_answer" or all(t.department != w.department for w in wanted))
                )
            )
            return self._make(ptype, {}, item_id)
        if target == 2 and rng.random() < 0.3:
            siblings = [
                t
                for t in PRODUCT_TYPES.values()
                if t.name not in intent.wanted_types and any(t.path[:2] == w.path[:2] for w in wanted)
            ]
            if siblings:
                return self._make(rng.choice(siblings), {}, item_id)
        ptype = rng.choice(wanted)
        fixed: dict[str, str | None] = {}
        for name, allowed in intent.required.items():
            if name == "brand" or name in ptype.attributes:
                fixed[name] = rng.choice(allowed)
        for name, value in intent.negated.items():
            fixed[name] = rng.choice([v for v in ptype.attributes[name] if v != value])
        fixed.update(intent.secondary)
        brands = [b for b in ptype.brands if b != intent.alternative_brand]
        if intent.alternative_brand and "brand" not in fixed:
            fixed["brand"] = rng.choice(brands)
        price_cap = intent.max_price or intent.alternative_price
        if target == 4:
            return self._make(ptype, fixed, item_id, price_cap=price_cap)
        if target == 3:
            options = [("drop", n) for n in list(intent.required) + list(intent.negated) if n in fixed]
            options += [("secondary", n) for n in intent.secondary]
            if intent.alternative_price:
                options.append(("pricey", ""))
            if not options:
                return self._make(ptype, fixed, item_id)
            how, name = rng.choice(options)
            if how == "drop":
                fixed[name] = None
            elif how == "secondary":
                fixed[name] = rng.choice([v for v in ptype.attributes[name] if v != intent.secondary[name]])
            else:
                return self._make(ptype, fixed, item_id, price_floor=intent.alternative_price)
            return self._make(ptype, fixed, item_id, price_cap=price_cap)
        # target 2: break one key requirement
        options = [
            ("violate", n)
            for n, allowed in intent.required.items()
            if n in fixed and len(_values(ptype, n)) > len(allowed)
        ]
        options += [("negated", n) for n in intent.negated]
        if intent.alternative_brand:
            options.append(("original", ""))
        if intent.max_price:
            options.append(("expensive", ""))
        if not options:
            return self._make(ptype, fixed, item_id)
        how, name = rng.choice(options)
        if how == "violate":
            fixed[name] = rng.choice([v for v in _values(ptype, name) if v not in intent.required[name]])
        elif how == "negated":
            fixed[name] = intent.negated[name]
        elif how == "original":
            assert intent.alternative_price is not None  # an alternative brand always comes with its price
            fixed["brand"] = intent.alternative_brand
            return self._make(ptype, fixed, item_id, price_floor=intent.alternative_price * 0.9)
        else:
            assert intent.max_price is not None  # "expensive" is offered only under a price cap
            return self._make(ptype, fixed, item_id, price_floor=intent.max_price + 1)
        return self._make(ptype, fixed, item_id, price_cap=price_cap)

    def _make(
        self,
        ptype: ProductType,
        fixed: Mapping[str, str | None],
        item_id: str,
        price_cap: float | None = None,
        price_floor: float | None = None,
    ) -> Item:
        rng = self.rng
        attributes: dict[str, str] = {"brand": fixed.get("brand") or rng.choice(ptype.brands)}
        for name, values in ptype.attributes.items():
            value = fixed[name] if name in fixed else rng.choice(values)
            if value is not None and (name in fixed or rng.random() > 0.08):  # some logs miss attributes
                attributes[name] = value
        low, high = ptype.price
        if price_cap is not None:
            high = max(low * 0.5, min(high, price_cap * 0.95))
            low = min(low, high)
        if price_floor is not None:
            low = max(low, price_floor)
            high = max(high, low * 1.3)
        price: float | None = round(rng.uniform(low, high), 2)
        if price_cap is None and price_floor is None and rng.random() < 0.05:
            price = None  # price missing from some logs
        return Item(item_id, ptype.name, attributes, price, _title(ptype, attributes))

    def _description(self, item: Item) -> str | None:
        roll = self.rng.random()
        if roll < 0.4:
            return None
        bullets = [f"{k.replace('_', ' ').title()}: {v}" for k, v in item.attributes.items()]
        if roll < 0.7:
            return f"{item.title}. " + ". ".join(bullets) + "."
        template = self.rng.choice(_HTML_DESCRIPTIONS)
        return template.format(
            title=item.title, bullets="".join(f"<li>{b}</li>" for b in bullets), bullets_text="<br/>".join(bullets)
        )

    def _pick_type(self, keep: Callable[[ProductType], bool] = lambda t: True) -> ProductType:
        return self.rng.choice([t for t in PRODUCT_TYPES.values() if keep(t)])


def generate_rows(rows: int, seed: int = 0, **mixes) -> list[dict]:
    """``rows`` log rows from a fresh generator (same arguments, same rows)."""
    return list(LogGenerator(seed=seed, **mixes).rows(rows))


def _values(ptype: ProductType, name: str) -> tuple[str, ...]:
    return ptype.brands if name == "brand" else ptype.attributes[name]


def _with_attribute(words: list[str], name: str, value: str, rng: random.Random) -> list[str]:
    value = value.lower()
    if name == "size":
        return words + [f"size {value}"]
    if name == "compatible_model":
        return words + [f"for {value}"]
    if name in ("connector", "capacity", "base") and rng.random() < 0.5:
        return words + [value]
    return [value] + words


def _summary(phrase: str, required: Mapping, secondary: Mapping | None = None, max_price: float | None = None) -> str:
    parts = [f"a {phrase}"]
    for name, allowed in required.items():
        parts.append(f"{name.replace('_', ' ')} {'/'.join(allowed)} (required)")
    for name, value in dict(secondary or {}).items():
        parts.append(f"{name.replace('_', ' ')} {value} (preferred)")
    if max_price is not None:
        parts.append(f"price under {max_price:.0f}")
    return "; ".join(parts)


def _title(ptype: ProductType, attributes: Mapping[str, str]) -> str:
    """Fill the type's title template; segments naming a missing attribute are left out."""
    segments = []
    for position, segment in enumerate(ptype.title.split(", ")):
        missing = [n for n in re.findall(r"\{(\w+)\}", segment) if n not in attributes]
        if missing and position > 0:
            continue
        for name in missing:  # inside the head segment: drop the word and its preposition
            segment = re.sub(r"(?:\s(?:for|with))?\s?\{" + name + r"\}", "", segment)
        segments.append(segment.format(**attributes))
    return re.sub(r"\s+", " ", ", ".join(segments)).strip(" ,")


def _normalise_mix(mix: Mapping, key: Callable[[Any], K]) -> dict[K, float]:
    cleaned = {key(k): float(v) for k, v in mix.items()}
    if any(v < 0 for v in cleaned.values()) or sum(cleaned.values()) <= 0:
        raise ValueError(f"a mix needs non-negative shares with a positive sum; got {dict(mix)}")
    if key is int and set(cleaned) - set(LEVELS):
        raise ValueError(f"label mix keys must be levels 1-4; got {sorted(cleaned, key=str)}")
    total = sum(cleaned.values())
    return {k: v / total for k, v in cleaned.items() if v > 0}


def _draw(rng: random.Random, mix: Mapping[K, float]) -> K:
    keys = list(mix)
    return rng.choices(keys, weights=[mix[k] for k in keys])[0]
