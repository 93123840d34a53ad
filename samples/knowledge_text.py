"""Invented knowledge topics (towns, rivers, inventors, ...) with short and long answers.

Why invented: a knowledge dataset about real entities would test what a model memorised from the
web; invented names and seeded attributes keep the bundled samples original, make the tiny
model's training text disjoint from them (another seed), and still give every answer the shape
of an encyclopaedia entry: a one-sentence summary or a paragraph of about a hundred words.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

KNOWLEDGE_RESPONSE_TYPES = ("short", "long")


@dataclass(frozen=True)
class KnowledgeTopic:
    """An invented entity with a question about it and a short and a long answer."""

    kind: str  # "town", "river", "inventor", ...
    name: str
    instruction: str
    short: str
    long: str

    def response(self, response_type: str) -> str:
        """The correct response of one of KNOWLEDGE_RESPONSE_TYPES."""
        if response_type == "short":
            return self.short
        if response_type == "long":
            return self.long
        raise ValueError(f"unknown knowledge response type {response_type!r}")


_ONSETS = (
    "Var", "El", "Mor", "Tal", "Bren", "Os", "Kel", "Dun", "Fen", "Gal", "Hal", "Ist", "Lor",
    "Mar", "Nor", "Ran", "Sel", "Thor", "Ul", "Wen", "Ash", "Cor", "Dal", "Eb", "Quel", "Tor",
    "Vel", "Yar", "Zen", "Bal",
)  # fmt: skip
_MIDDLES = ("", "a", "e", "i", "o", "en", "an", "ri", "el", "ur")
_ENDINGS = {
    "town": ("holm", "ford", "bury", "wick", "stead", "dale", "moor", "haven", "gate", "ton"),
    "river": ("a", "ine", "wen", "ora", "ette", "is", "uve", "ander"),
    "mountain": ("horn", "peak", "crag", "berg", "spire", "fell"),
    "lake": ("mere", "water", "loch", "tarn", "pool"),
    "island": ("ey", "ness", "skar", "holm", "ay"),
    "festival": ("mas", "tide", "fair", "feast", "night"),
    "surname": ("ström", "berg", "wood", "ard", "ley", "mann", "ov", "ini", "ez", "son"),
}
_FIRST_NAMES = (
    "Agnes", "Bertil", "Cosima", "Dorian", "Edda", "Florin", "Greta", "Henrik", "Ilse", "Jasper",
    "Katrin", "Lucian", "Marit", "Nils", "Odile", "Pavel", "Quinta", "Rosalind", "Stellan",
    "Tilde", "Ulrich", "Vera", "Wilhelmina", "Xavier", "Ysolde", "Zoltan",
)  # fmt: skip
_REGIONS = (
    "the northern highlands", "the coastal lowlands", "the eastern plains", "a quiet valley",
    "the western hills", "the southern marshes", "the old forest country", "the lake district",
)  # fmt: skip
_PRODUCTS = (
    ("woollen blankets", "weavers"), ("copper bells", "bell founders"),
    ("apple cider", "orchard keepers"), ("glass beads", "glassblowers"),
    ("smoked cheese", "dairy farmers"), ("painted tiles", "potters"),
    ("wooden toys", "carvers"), ("honey cakes", "bakers"), ("linen sails", "sailmakers"),
    ("silver brooches", "silversmiths"),
)  # fmt: skip
_LANDMARKS = (
    "a crooked clock tower", "a stone bridge with seven arches", "a round library",
    "an old windmill with blue sails", "a covered market hall", "a lighthouse on the harbour wall",
    "a ruined abbey", "a garden of stone lanterns",
)  # fmt: skip
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
_SEAS = ("the Grey Sea", "the Amber Sea", "the Bay of Tallow", "the Northern Gulf", "Lake Ivory")
_FISH = ("trout", "pike", "grayling", "eels", "perch", "silver carp")
_INVENTIONS = (
    ("a folding water pump", "farms in dry summers"),
    ("a clockwork loom", "weavers who worked at home"),
    ("a lamp that burned seed oil", "miners underground"),
    ("a lightweight printing press", "small village newspapers"),
    ("a spring-driven grain mill", "bakers without a river nearby"),
    ("a brass sea compass", "fishing crews in fog"),
    ("a pedal-powered lathe", "furniture makers"),
    ("a copper rain gauge", "early weather observers"),
)  # fmt: skip
_PROFESSIONS = ("a clockmaker", "a blacksmith", "a schoolteacher", "a miller", "a ship's carpenter")
_CELEBRATES = (
    ("the first harvest of the year", "baskets of grain"),
    ("the return of the fishing fleet", "paper boats"),
    ("the longest night of winter", "lanterns"),
    ("the founding of the town", "banners"),
    ("the spring thaw", "ribbons and bells"),
    ("the end of the grape harvest", "barrels of juice"),
)  # fmt: skip
_FESTIVAL_FOODS = (
    "honey cakes", "roasted chestnuts", "smoked fish", "plum dumplings", "spiced cider",
    "sweet buns", "grilled sausages",
)  # fmt: skip
_ANIMALS = ("mountain goats", "eagles", "wild ponies", "marmots", "red deer", "snow hares")
_TREES = ("pine", "birch", "beech", "larch", "juniper", "alder")
_BIRDS = ("herons", "puffins", "terns", "cormorants", "swans", "oystercatchers")


def _alternatives(words: Sequence[str]) -> str:
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


# Every name `_invented_name` can produce (and, by chance, a few real ones such as "Elena").
INVENTED_NAME = re.compile(
    rf"\b(?:{_alternatives(_ONSETS)})(?:{_alternatives(_MIDDLES)})?"
    rf"(?:{_alternatives([e for endings in _ENDINGS.values() for e in endings])})\b"
)


def _invented_name(rng: random.Random, kind: str) -> str:
    return rng.choice(_ONSETS) + rng.choice(_MIDDLES) + rng.choice(_ENDINGS[kind])


def _town(rng: random.Random, name: str) -> tuple[str, str, str]:
    region = rng.choice(_REGIONS)
    river = _invented_name(rng, "river")
    founded = rng.randint(1100, 1850)
    population = rng.randrange(1200, 85000, 100)
    product, makers = rng.choice(_PRODUCTS)
    landmark = rng.choice(_LANDMARKS)
    month = rng.choice(_MONTHS)
    festival = _invented_name(rng, "festival")
    instruction = rng.choice(
        (f"Tell me about {name}.", f"What is {name} known for?", f"Describe the town of {name}.")
    )
    short = f"{name} is a town in {region} on the {river} River, known for its {product}."
    long = (
        f"{name} is a town in {region}, built along the banks of the {river} River. It was "
        f"founded in {founded} by a small group of {makers}, and their craft still shapes the "
        f"town today: {name} is best known for its {product}, which are sold in markets across "
        f"the region. About {population:,} people live there now. The most famous landmark of "
        f"{name} is {landmark}, which stands near the market square. Every {month} the town "
        f"holds the {festival} festival, when visitors fill the streets. Besides its craft, "
        f"{name} lives from farming, river trade and a modest number of tourists."
    )
    return instruction, short, long


def _river(rng: random.Random, name: str) -> tuple[str, str, str]:
    length = rng.randrange(40, 900, 5)
    mountains = _invented_name(rng, "mountain")
    sea = rng.choice(_SEAS)
    town_a, town_b = _invented_name(rng, "town"), _invented_name(rng, "town")
    fish = rng.sample(_FISH, 2)
    bridges = rng.randint(3, 40)
    instruction = rng.choice(
        (
            f"Tell me about the {name} River.",
            f"What do you know about the {name} River?",
            f"Describe the {name} River.",
        )
    )
    short = (
        f"The {name} River is a {length}-kilometre river that rises near {mountains} and flows "
        f"into {sea}."
    )
    long = (
        f"The {name} River is about {length} kilometres long. It rises as a cold spring on the "
        f"slopes of {mountains} and runs through a narrow gorge before it widens into farmland. "
        f"Along its course the {name} passes the towns of {town_a} and {town_b}, where it is "
        f"crossed by {bridges} bridges in total. The river finally flows into {sea} through a "
        f"broad, reedy delta. Its clear water is home to {fish[0]} and {fish[1]}, and anglers "
        f"visit it every summer. In spring the {name} often floods the meadows near {town_b}, "
        f"leaving rich soil behind for the local farmers."
    )
    return instruction, short, long


def _inventor(rng: random.Random, name: str) -> tuple[str, str, str]:
    born = rng.randint(1720, 1890)
    died = born + rng.randint(48, 91)
    hometown = _invented_name(rng, "town")
    profession = rng.choice(_PROFESSIONS)
    invention, users = rng.choice(_INVENTIONS)
    invented_at = born + rng.randint(24, 45)
    surname = name.split()[-1]
    instruction = rng.choice(
        (f"Who was {name}?", f"Tell me about {name}.", f"What is {name} remembered for?")
    )
    short = f"{name} ({born}–{died}) was an inventor from {hometown} who built {invention}."
    long = (
        f"{name} ({born}–{died}) was an inventor born in the town of {hometown}. {surname} "
        f"trained as {profession} and spent years repairing machines for neighbours before "
        f"designing new tools in a workshop at home. In {invented_at} {surname} built {invention}, "
        f"which was soon used by {users}. The design was simple, cheap to repair and copied by "
        f"workshops in many towns. {surname} never grew rich from it, but spent later years "
        f"teaching apprentices in {hometown}. A small museum in {hometown} still displays the "
        f"first working model, together with {surname}'s notebooks and letters."
    )
    return instruction, short, long


def _mountain(rng: random.Random, name: str) -> tuple[str, str, str]:
    height = rng.randrange(1800, 6400, 10)
    climber = f"{rng.choice(_FIRST_NAMES)} {_invented_name(rng, 'surname')}"
    first_climb = rng.randint(1790, 1960)
    village = _invented_name(rng, "town")
    animal = rng.choice(_ANIMALS)
    tree = rng.choice(_TREES)
    instruction = rng.choice(
        (f"Tell me about {name}.", f"How high is {name}?", f"Describe the mountain {name}.")
    )
    short = (
        f"{name} is a mountain {height:,} metres high, first climbed by {climber} in {first_climb}."
    )
    long = (
        f"{name} is a mountain that rises {height:,} metres above sea level. Its lower slopes are "
        f"covered in {tree} forest, while the upper part is bare rock and snow for most of the "
        f"year. The usual route to the summit starts in the village of {village}, where guides "
        f"still lead small groups in summer. {name} was first climbed in {first_climb} by "
        f"{climber}, who needed three attempts and two weeks of good weather. Today the "
        f"mountain is a protected area, and {animal} can often be seen near the high meadows. "
        f"Sudden storms make {name} dangerous even for experienced climbers."
    )
    return instruction, short, long


def _lake(rng: random.Random, name: str) -> tuple[str, str, str]:
    area = rng.randint(3, 480)
    depth = rng.randint(12, 310)
    island_count = rng.randint(2, 9)
    birds = rng.choice(_BIRDS)
    town = _invented_name(rng, "town")
    river = _invented_name(rng, "river")
    instruction = rng.choice(
        (f"Tell me about {name}.", f"What do you know about {name}?", f"Describe {name}.")
    )
    short = (
        f"{name} is a lake of {area} square kilometres next to {town}, fed by the {river} River."
    )
    long = (
        f"{name} is a freshwater lake covering about {area} square kilometres, with a greatest "
        f"depth of {depth} metres. It is fed mainly by the {river} River, which enters it from "
        f"the north, and its water stays cold even in late summer. The town of {town} lies on "
        f"its southern shore and runs a small ferry across the lake. {name} has {island_count} "
        f"islands, most of them too small to build on. Large colonies of {birds} nest along the "
        f"reeds, so parts of the shore are closed to visitors in spring. Fishing and boating "
        f"bring many summer guests to {town}."
    )
    return instruction, short, long


def _festival(rng: random.Random, name: str) -> tuple[str, str, str]:
    town = _invented_name(rng, "town")
    month = rng.choice(_MONTHS)
    celebrates, symbol = rng.choice(_CELEBRATES)
    since = rng.randint(1400, 1950)
    days = rng.randint(2, 7)
    food = rng.choice(_FESTIVAL_FOODS)
    instruction = rng.choice(
        (
            f"What is the {name} festival?",
            f"Tell me about the {name} festival.",
            f"Describe the {name} festival.",
        )
    )
    short = f"The {name} festival is held in {town} every {month} to celebrate {celebrates}."
    long = (
        f"The {name} festival is a celebration held every {month} in the town of {town}. It "
        f"marks {celebrates} and has been held, with few interruptions, since {since}. The "
        f"festival lasts {days} days. On the first evening the townspeople carry {symbol} "
        f"through the streets to the main square, where the mayor opens the celebrations. The "
        f"following days are filled with music, dancing and markets selling {food}. The "
        f"{name} festival ends with a shared meal at long tables in the square, to which every "
        f"visitor is invited."
    )
    return instruction, short, long


_KNOWLEDGE_KINDS: dict[str, tuple[str, Callable[[random.Random, str], tuple[str, str, str]]]] = {
    "town": ("town", _town),
    "river": ("river", _river),
    "inventor": ("surname", _inventor),
    "mountain": ("mountain", _mountain),
    "lake": ("lake", _lake),
    "festival": ("festival", _festival),
}


def knowledge_topics(seed: int, count: int) -> list[KnowledgeTopic]:
    """`count` invented topics with distinct names drawn from `seed`, cycling through the kinds."""
    rng = random.Random(seed)
    topics: list[KnowledgeTopic] = []
    names: set[str] = set()
    order: list[str] = []
    while len(topics) < count:
        if not order:
            order = sorted(_KNOWLEDGE_KINDS)
            rng.shuffle(order)
        kind = order.pop()
        ending, write = _KNOWLEDGE_KINDS[kind]
        name = _invented_name(rng, ending)
        if kind == "inventor":
            name = f"{rng.choice(_FIRST_NAMES)} {name}"
        if name in names:
            continue
        names.add(name)
        instruction, short, long = write(rng, name)
        topics.append(KnowledgeTopic(kind, name, instruction, short, long))
    return topics
