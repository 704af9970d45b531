"""The atomic-rule knowledge base and the judge that labels generated (query, item) pairs.

Every rule has an id and a one-sentence text. The judge applies the rules to a query intent and
an item and returns the level together with the trace of rules that fired and the verdicts of
reasoning steps 3-5: the trace is what the rule-grounded teacher writes rationales from and what
the offline step verifier checks against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from taosr.formats import Reasoning
from taosr.datasets.catalogue import PRODUCT_TYPES, ProductType


@dataclass(frozen=True)
class Rule:
    id: str
    text: str


_RULES = [
    Rule("CAT-01", "An item whose product type is the one the query asks for matches the query's category."),
    Rule(
        "CAT-02",
        "An item of another product type in the same product family as the one asked for is in the right broad "
        "category but violates the product type the query asks for.",
    ),
    Rule("CAT-03", "An accessory of the product the query asks for is the wrong kind of item."),
    Rule("CAT-04", "An item from a different department than the product asked for is the wrong kind of item."),
    Rule("CAT-05", "An item from the same department but a different product family is the wrong kind of item."),
    Rule(
        "ATTR-01",
        "When the item's value of an attribute the query requires differs from the required value, a key "
        "requirement is violated.",
    ),
    Rule(
        "ATTR-02",
        "When the item does not state an attribute the query requires, the requirement is unknown and the item is "
        "at most related.",
    ),
    Rule(
        "ATTR-03",
        "When only an attribute the query mentions as secondary differs, the item is related rather than excellent.",
    ),
    Rule(
        "ATTR-04", "An item of the right product type that meets every requirement of the query is an excellent match."
    ),
    Rule("ATTR-05", "A brand named in the query is a key requirement."),
    Rule("ATTR-06", "A size named in the query is a key requirement, because a different size does not fit."),
    Rule("ATTR-07", "A colour named in the query is a key requirement."),
    Rule("ATTR-08", "A case or accessory fits only the device model it is made for."),
    Rule(
        "NEG-01",
        "A negated attribute value in the query ('not pink', 'without', 'no') excludes items that have that value.",
    ),
    Rule("NEG-02", "An item that does not state the negated attribute neither violates nor confirms the negation."),
    Rule("NEG-03", "An item of the right type whose value differs from the negated one satisfies the negation."),
    Rule(
        "ALT-01",
        "An alternative or dupe query asks for an item with the same function as the named product from another brand.",
    ),
    Rule(
        "ALT-02",
        "The named product itself, or another item of its brand, does not answer a query for an alternative to it.",
    ),
    Rule(
        "ALT-03",
        "An alternative that is not cheaper than the named product misses the query's request for an affordable "
        "option.",
    ),
    Rule(
        "ALT-04",
        "A cheaper item of the same function from another brand is an excellent answer to an alternative query.",
    ),
    Rule("QA-01", "A question-answer query names a need, and items of a type that serves the need match its category."),
    Rule("QA-02", "An item of a suitable type that lacks a property the need requires violates a key requirement."),
    Rule(
        "QA-03", "An item in the same department as the suitable items that does not serve the need violates the need."
    ),
    Rule(
        "PRICE-01",
        "A price limit in the query ('under $50') is a key requirement, and an item without a price leaves it unknown.",
    ),
    Rule("KN-01", "The iPhone 15 charges through a USB-C port."),
    Rule("KN-02", "The iPhone 14 charges through a Lightning port."),
    Rule("KN-03", "The iPhone 13 charges through a Lightning port."),
    Rule("KN-04", "The Samsung Galaxy S24 charges through a USB-C port."),
    Rule("KN-05", "The Google Pixel 8 charges through a USB-C port."),
    Rule("KN-06", "The Samsung Galaxy A54 charges through a USB-C port."),
    Rule("KN-07", "The PlayStation 5 DualSense controller charges through a USB-C port."),
    Rule("KN-08", "The PlayStation 4 DualShock 4 controller charges through a Micro-USB port."),
    Rule("KN-09", "The Nintendo Switch charges through a USB-C port."),
    Rule("KN-10", "The HP DeskJet 2755 printer takes HP 67 ink cartridges."),
    Rule("KN-11", "The Canon PIXMA TS3520 printer takes Canon PG-275 ink cartridges."),
    Rule("KN-12", "The Epson EcoTank ET-2800 printer takes Epson 502 ink bottles."),
    Rule("KN-13", "Keurig brewers take K-Cup pods."),
    Rule("KN-14", "Nespresso Vertuo machines take only Nespresso Vertuo capsules."),
    Rule("KN-15", "Nespresso OriginalLine machines take Nespresso Original capsules."),
    Rule("KN-16", "Chandeliers and candelabra fixtures take E12 bulbs."),
    Rule("KN-17", "Standard US table and floor lamps take E26 bulbs."),
    Rule("KN-18", "Track lights and recessed spotlights take GU10 bulbs."),
    Rule("REF-01", "The Dyson Airwrap is a multi hair styler that costs about $599."),
    Rule("REF-02", "Apple AirPods Pro are noise-cancelling wireless earbuds that cost about $249."),
    Rule("REF-03", "The Stanley Quencher is an insulated 40 oz tumbler that costs about $45."),
    Rule("REF-04", "Lululemon Align leggings cost about $98."),
    Rule("REF-05", "The KitchenAid Artisan stand mixer costs about $449."),
    Rule("REF-06", "The Herman Miller Aeron office chair costs about $1,395."),
    Rule("REF-07", "Sony WH-1000XM5 noise-cancelling headphones cost about $399."),
    Rule(
        "NEED-01",
        "For a beach wedding, light dresses of linen, cotton or chiffon, linen shirts and sandals are suitable.",
    ),
    Rule("NEED-02", "For hiking in the rain, waterproof rain jackets and waterproof hiking boots are suitable."),
    Rule("NEED-03", "A newborn needs swaddles and baby bottles."),
    Rule("NEED-04", "Setting up a home office calls for a desk and an office chair."),
    Rule("NEED-05", "A first camping trip calls for a tent, a sleeping bag and a headlamp."),
    Rule("NEED-06", "Starting to run calls for running shoes and leggings."),
    Rule("NEED-07", "A gift for a coffee lover can be coffee pods or an insulated tumbler."),
    Rule("NEED-08", "For a long flight, noise-cancelling earbuds or headphones are suitable."),
]

RULES: dict[str, Rule] = {rule.id: rule for rule in _RULES}

# Attribute-specific rules that explain why a required attribute is key.
_ATTRIBUTE_RULE = {"brand": "ATTR-05", "size": "ATTR-06", "color": "ATTR-07", "compatible_model": "ATTR-08"}


@dataclass(frozen=True)
class Intent:
    """What a query asks for, as the generator knows it (never shown to the model)."""

    text: str
    query_type: str
    wanted_types: tuple[str, ...]
    required: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # attribute -> allowed values
    required_rule: Mapping[str, str] = field(default_factory=dict)  # attribute -> rule that requires it
    secondary: Mapping[str, str] = field(default_factory=dict)
    negated: Mapping[str, str] = field(default_factory=dict)
    max_price: float | None = None
    alternative_brand: str | None = None
    alternative_price: float | None = None
    query_rules: tuple[str, ...] = ()  # rules the query itself invokes (a fact, a need, a reference)
    summary: str = ""


@dataclass(frozen=True)
class Item:
    item_id: str
    product_type: str
    attributes: Mapping[str, str]
    price: float | None
    title: str

    @property
    def type(self) -> ProductType:
        return PRODUCT_TYPES[self.product_type]


@dataclass(frozen=True)
class Judgement:
    level: int
    rule_ids: tuple[str, ...]
    reasoning: Reasoning


def judge(intent: Intent, item: Item) -> Judgement:
    """Apply the knowledge base to one (query intent, item) pair."""
    fired: list[str] = list(intent.query_rules)
    item_type = item.type
    wanted = [PRODUCT_TYPES[name] for name in intent.wanted_types]
    qa = intent.query_type == "question_answer"

    def done(level, category, category_reason, attributes, attribute_reason):
        reasoning = Reasoning(
            query=intent.summary,
            item=_item_summary(item),
            category_verdict=category,
            category_reason=category_reason,
            attribute_verdict=attributes,
            attribute_reason=attribute_reason,
            decision=level,
        )
        return Judgement(level, tuple(dict.fromkeys(fired)), reasoning)

    wanted_phrases = " or ".join(t.phrase for t in wanted)
    if item_type.name not in intent.wanted_types:
        if any(item_type.accessory_of == t.name for t in wanted):
            fired.append("CAT-03")
            return done(
                1,
                "mismatch",
                f"a {item_type.phrase} is an accessory, not a {wanted_phrases}",
                "unknown",
                "not checked: wrong kind of item",
            )
        if any(item_type.path[:2] == t.path[:2] for t in wanted) or (
            qa and any(item_type.department == t.department for t in wanted)
        ):
            fired.append("QA-03" if qa else "CAT-02")
            return done(
                2,
                "partial",
                f"a {item_type.phrase} is in the same {item_type.department.lower()} category but is not a "
                f"{wanted_phrases}",
                "violated",
                f"the product type must be {wanted_phrases}",
            )
        rule = "CAT-05" if any(item_type.department == t.department for t in wanted) else "CAT-04"
        fired.append(rule)
        return done(
            1,
            "mismatch",
            f"a {item_type.phrase} is not a {wanted_phrases}",
            "unknown",
            "not checked: wrong kind of item",
        )

    fired.append("QA-01" if qa else "CAT-01")
    category_reason = f"the item is a {item_type.phrase}, as asked"
    violated: list[str] = []
    unknown: list[str] = []
    partial: list[str] = []
    satisfied: list[str] = []
    attrs = item.attributes

    for name, allowed in intent.required.items():
        if name != "brand" and name not in item_type.attributes:
            continue
        rule = intent.required_rule.get(name) or _ATTRIBUTE_RULE.get(name, "")
        shown = " or ".join(allowed)
        if name not in attrs:
            fired.append("ATTR-02")
            unknown.append(f"{_pretty(name)} is not stated (needs {shown})")
        elif attrs[name] not in allowed:
            fired.extend(["ATTR-01"] + ([rule] if rule else []))
            violated.append(f"{_pretty(name)} is {attrs[name]}, but the query needs {shown}")
        else:
            satisfied.append(f"{_pretty(name)} {attrs[name]}")
    for name, value in intent.negated.items():
        if name not in attrs:
            fired.append("NEG-02")
            unknown.append(f"{_pretty(name)} is not stated, so 'not {value}' cannot be confirmed")
        elif attrs[name] == value:
            fired.append("NEG-01")
            violated.append(f"{_pretty(name)} is {value}, which the query excludes")
        else:
            fired.append("NEG-03")
            satisfied.append(f"{_pretty(name)} {attrs[name]}, not {value}")
    if intent.max_price is not None:
        fired.append("PRICE-01")
        if item.price is None:
            unknown.append(f"no price is given (limit {intent.max_price:.0f})")
        elif item.price > intent.max_price:
            violated.append(f"price {item.price:.2f} is above the limit of {intent.max_price:.0f}")
        else:
            satisfied.append(f"price {item.price:.2f} within the limit")
    if intent.alternative_brand is not None:
        assert intent.alternative_price is not None, "an alternative brand comes with the original's price"
        fired.append("ALT-01")
        if attrs.get("brand") == intent.alternative_brand:
            fired.append("ALT-02")
            violated.append(f"it is a {intent.alternative_brand} item, the brand the query wants an alternative to")
        elif item.price is None:
            unknown.append("no price is given, so it cannot be confirmed as cheaper")
        elif item.price >= intent.alternative_price:
            fired.append("ALT-03")
            partial.append(f"price {item.price:.2f} is not below the original's {intent.alternative_price:.0f}")
        else:
            fired.append("ALT-04")
            satisfied.append(f"another brand at {item.price:.2f}, below the original's {intent.alternative_price:.0f}")
    for name, value in intent.secondary.items():
        if name in attrs and attrs[name] != value:
            fired.append("ATTR-03")
            partial.append(f"{_pretty(name)} is {attrs[name]}, not the preferred {value}")

    if violated:
        return done(2, "match", category_reason, "violated", "; ".join(violated))
    if unknown:
        return done(3, "match", category_reason, "unknown", "; ".join(unknown))
    if partial:
        return done(3, "match", category_reason, "partial", "; ".join(partial))
    fired.append("ATTR-04")
    reason = "; ".join(satisfied) if satisfied else "the query states no further requirement"
    return done(4, "match", category_reason, "match", reason)


def _pretty(name: str) -> str:
    return name.replace("_", " ")


def _item_summary(item: Item) -> str:
    shown = ", ".join(f"{_pretty(k)} {v}" for k, v in item.attributes.items() if k != "brand")
    brand = item.attributes.get("brand")
    head = f"a {brand} {item.type.phrase}" if brand else f"a {item.type.phrase}"
    return f"{head} ({shown})" if shown else head
