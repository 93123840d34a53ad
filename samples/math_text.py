"""Math word problems with correct answers, for the bundled samples and the tiny model.

Why templates and not a list: the samples and the tiny model's training text must be different
problems of the same kinds, so each template draws its numbers, names and items from a seeded
`random.Random`; answers are computed, never typed in. Every problem carries what its three
response types need: the bare answer (fast thinking), a short human-style rationale and a long
numbered solution that restates the question and verifies the result (slow thinking).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MATH_RESPONSE_TYPES = ("none_cot", "simplified_cot", "detailed_cot")


@dataclass(frozen=True)
class MathStep:
    """One numbered step of a detailed solution: what is computed, why, and the equation."""

    title: str
    explanation: str
    equation: str


@dataclass(frozen=True)
class MathProblem:
    """A word problem with its correct answer and the material for every response type."""

    topic: str  # which template produced it, e.g. "shopping"
    question: str
    answer: int
    rationale: tuple[str, ...]  # short human-style sentences, one calculation each
    restatement: str  # the question in other words, for the detailed solution
    steps: tuple[MathStep, ...]
    check: str  # a verification sentence for the detailed solution

    def response(self, response_type: str) -> str:
        """The correct response of one of MATH_RESPONSE_TYPES."""
        if response_type == "none_cot":
            return f"The answer is {self.answer}."
        if response_type == "simplified_cot":
            return " ".join(self.rationale) + f"\nThe final answer is {self.answer}"
        if response_type == "detailed_cot":
            return self._detailed()
        raise ValueError(f"unknown math response type {response_type!r}")

    def _detailed(self) -> str:
        parts = [
            "Let's solve this problem step by step.",
            f"**The question.** {self.question}",
            f"**What we need.** {self.restatement}",
        ]
        for number, step in enumerate(self.steps, start=1):
            equation = step.equation.replace(" * ", " \\times ").replace(" / ", " \\div ")
            parts.append(
                f"{number}. **{step.title}**\n\n   {step.explanation}\n   \\[\n   {equation}\n   \\]"
            )
        parts.append(f"**Verification.** {self.check}")
        parts.append(f"The final answer is {self.answer}")
        return "\n\n".join(parts)


_PEOPLE = (
    ("Maya", "she"),
    ("Omar", "he"),
    ("Lena", "she"),
    ("Jonas", "he"),
    ("Priya", "she"),
    ("Tomas", "he"),
    ("Aiko", "she"),
    ("Felix", "he"),
    ("Nadia", "she"),
    ("Ravi", "he"),
    ("Elena", "she"),
    ("Kofi", "he"),
    ("Sara", "she"),
    ("Liam", "he"),
    ("Mei", "she"),
    ("Diego", "he"),
    ("Hana", "she"),
    ("Ivan", "he"),
    ("Zara", "she"),
    ("Noah", "he"),
    ("Amara", "she"),
    ("Leo", "he"),
    ("Ines", "she"),
    ("Yusuf", "he"),
    ("Clara", "she"),
    ("Mateo", "he"),
    ("Freya", "she"),
    ("Arjun", "he"),
    ("Olga", "she"),
    ("Sami", "he"),
)
_POSSESSIVE = {"she": "her", "he": "his"}
_OBJECT = {"she": "her", "he": "him"}

_SHOP_ITEMS = (
    ("notebook", "notebooks"),
    ("pen", "pens"),
    ("apple", "apples"),
    ("mug", "mugs"),
    ("candle", "candles"),
    ("sandwich", "sandwiches"),
    ("comic book", "comic books"),
    ("plant pot", "plant pots"),
    ("bag of rice", "bags of rice"),
    ("pair of socks", "pairs of socks"),
    ("loaf of bread", "loaves of bread"),
    ("box of crayons", "boxes of crayons"),
)
_SALE_ITEMS = (
    "jacket",
    "bicycle",
    "lamp",
    "backpack",
    "pair of boots",
    "tent",
    "guitar",
    "desk chair",
    "rug",
    "camera",
)
_SAVING_GOALS = ("bicycle", "video game", "telescope", "skateboard", "keyboard", "tent", "watch")
_VEHICLES = (
    ("train", 60, 120),
    ("bus", 40, 80),
    ("car", 50, 100),
    ("cyclist", 10, 25),
    ("boat", 15, 40),
)
_SHARED_THINGS = ("stickers", "marbles", "candies", "pencils", "cards", "grapes", "beads")
_RECEIVERS = ("their teacher", "a younger sibling", "a neighbour", "the class jar")
_SPORTS = ("football", "chess", "basketball", "the violin", "tennis", "volleyball")
_TWO_LEGGED = ("chickens", "ducks", "geese", "turkeys")
_FOUR_LEGGED = ("cows", "goats", "sheep", "pigs", "horses")
_JOBS = ("at a bakery", "at a bookshop", "as a tutor", "at a cafe", "at a garden centre")


def _person(rng: random.Random, exclude: Sequence[str] = ()) -> tuple[str, str]:
    while True:
        name, pronoun = rng.choice(_PEOPLE)
        if name not in exclude:
            return name, pronoun


def _shopping(rng: random.Random) -> MathProblem:
    name, she = _person(rng)
    (one_a, many_a), (one_b, many_b) = rng.sample(_SHOP_ITEMS, 2)
    count_a, price_a = rng.randint(2, 6), rng.randint(2, 9)
    count_b = rng.randint(2, 5)
    price_b = rng.choice([p for p in range(1, 7) if p != price_a])
    cost_a, cost_b = count_a * price_a, count_b * price_b
    total = cost_a + cost_b
    bill = 20 if total < 20 else 50 if total < 50 else 100
    change = bill - total
    question = (
        f"{name} buys {count_a} {many_a} for ${price_a} each and {count_b} {many_b} for "
        f"${price_b} each. {she.capitalize()} pays with a ${bill} bill. How much change, in "
        f"dollars, does {name} get back?"
    )
    return MathProblem(
        topic="shopping",
        question=question,
        answer=change,
        rationale=(
            f"The {many_a} cost {count_a} * {price_a} = {cost_a} dollars.",
            f"The {many_b} cost {count_b} * {price_b} = {cost_b} dollars.",
            f"Together {name} spends {cost_a} + {cost_b} = {total} dollars.",
            f"The change is {bill} - {total} = {change} dollars.",
        ),
        restatement=(
            f"{name} pays for two kinds of items with a ${bill} bill, and we need the change: "
            f"the bill minus the total cost of the {many_a} and the {many_b}."
        ),
        steps=(
            MathStep(
                f"Find the cost of the {many_a}.",
                f"Each {one_a} costs ${price_a} and {name} buys {count_a} of them:",
                f"{count_a} * {price_a} = {cost_a}",
            ),
            MathStep(
                f"Find the cost of the {many_b}.",
                f"Each {one_b} costs ${price_b} and {name} buys {count_b} of them:",
                f"{count_b} * {price_b} = {cost_b}",
            ),
            MathStep(
                "Add the two costs.",
                "The total amount spent is the sum of both purchases:",
                f"{cost_a} + {cost_b} = {total}",
            ),
            MathStep(
                "Subtract the total from the bill.",
                f"{name} hands over ${bill}, so the change is:",
                f"{bill} - {total} = {change}",
            ),
        ),
        check=(
            f"Adding the change back to the cost gives {change} + {total} = {bill}, which is "
            f"exactly the ${bill} bill {name} paid with."
        ),
    )


def _travel(rng: random.Random) -> MathProblem:
    vehicle, low, high = rng.choice(_VEHICLES)
    speeds = list(range(low, high + 1, 5))
    speed_1, speed_2 = rng.sample(speeds, 2)
    hours_1, hours_2 = rng.randint(2, 5), rng.randint(1, 4)
    part_1, part_2 = speed_1 * hours_1, speed_2 * hours_2
    total = part_1 + part_2
    question = (
        f"A {vehicle} travels at {speed_1} km/h for {hours_1} hours and then at {speed_2} km/h "
        f"for {hours_2} hours. How many kilometres does the {vehicle} travel in total?"
    )
    return MathProblem(
        topic="travel",
        question=question,
        answer=total,
        rationale=(
            f"In the first part the {vehicle} covers {speed_1} * {hours_1} = {part_1} km.",
            f"In the second part it covers {speed_2} * {hours_2} = {part_2} km.",
            f"In total it travels {part_1} + {part_2} = {total} km.",
        ),
        restatement=(
            f"The {vehicle}'s trip has two parts, {hours_1} hours at {speed_1} km/h and "
            f"{hours_2} hours at {speed_2} km/h. Distance equals speed times time, so we find "
            f"the distance of each part and add them."
        ),
        steps=(
            MathStep(
                "Distance of the first part.",
                f"The {vehicle} moves at {speed_1} km/h for {hours_1} hours:",
                f"{speed_1} * {hours_1} = {part_1}",
            ),
            MathStep(
                "Distance of the second part.",
                f"Then it moves at {speed_2} km/h for {hours_2} hours:",
                f"{speed_2} * {hours_2} = {part_2}",
            ),
            MathStep(
                "Total distance.",
                "Adding both parts of the trip:",
                f"{part_1} + {part_2} = {total}",
            ),
        ),
        check=(
            f"Taking away the second part leaves {total} - {part_2} = {part_1} km, which matches "
            f"the first part of the trip."
        ),
    )


def _ages(rng: random.Random) -> MathProblem:
    older, _ = _person(rng)
    younger, _ = _person(rng, exclude=(older,))
    young_age = rng.randint(4, 15)
    factor = rng.randint(2, 4)
    years = rng.randint(2, 10)
    future = young_age + years
    old_age = factor * young_age
    question = (
        f"{older} is {factor} times as old as {younger}. In {years} years, {younger} will be "
        f"{future} years old. How old is {older} now?"
    )
    return MathProblem(
        topic="ages",
        question=question,
        answer=old_age,
        rationale=(
            f"{younger} is {future} - {years} = {young_age} years old now.",
            f"So {older} is {factor} * {young_age} = {old_age} years old.",
        ),
        restatement=(
            f"We know {younger}'s age {years} years from now and that {older} is {factor} times "
            f"as old as {younger}. We need {older}'s age today."
        ),
        steps=(
            MathStep(
                f"Find {younger}'s current age.",
                f"In {years} years {younger} will be {future}, so today {younger} is:",
                f"{future} - {years} = {young_age}",
            ),
            MathStep(
                f"Find {older}'s current age.",
                f"{older} is {factor} times as old as {younger}:",
                f"{factor} * {young_age} = {old_age}",
            ),
        ),
        check=(
            f"Dividing gives {old_age} / {factor} = {young_age}, and {young_age} + {years} = "
            f"{future}, so both facts in the question hold."
        ),
    )


def _area(rng: random.Random) -> MathProblem:
    length, width = rng.randint(8, 30), rng.randint(5, 20)
    side = rng.randint(2, min(length, width) - 2)
    field, pond = length * width, side * side
    left = field - pond
    question = (
        f"A rectangular garden is {length} metres long and {width} metres wide. A square pond "
        f"with sides of {side} metres is dug in the garden. How many square metres of the "
        f"garden are left for planting?"
    )
    return MathProblem(
        topic="area",
        question=question,
        answer=left,
        rationale=(
            f"The garden has an area of {length} * {width} = {field} square metres.",
            f"The pond takes {side} * {side} = {pond} square metres.",
            f"That leaves {field} - {pond} = {left} square metres for planting.",
        ),
        restatement=(
            "The planting area is the area of the rectangular garden minus the area of the "
            "square pond inside it."
        ),
        steps=(
            MathStep(
                "Area of the garden.",
                "The area of a rectangle is its length times its width:",
                f"{length} * {width} = {field}",
            ),
            MathStep(
                "Area of the pond.",
                "The area of a square is its side times itself:",
                f"{side} * {side} = {pond}",
            ),
            MathStep(
                "Area left for planting.",
                "Subtract the pond from the garden:",
                f"{field} - {pond} = {left}",
            ),
        ),
        check=f"The pond and the planting area together give {pond} + {left} = {field}, the whole garden.",
    )


def _sharing(rng: random.Random) -> MathProblem:
    name, _ = _person(rng)
    things = rng.choice(_SHARED_THINGS)
    receiver = rng.choice(_RECEIVERS)
    friends, each = rng.randint(3, 8), rng.randint(5, 15)
    given = rng.randint(1, each - 1)
    total = friends * each
    left = each - given
    question = (
        f"{name} has {total} {things} and shares them equally among {friends} friends. Each "
        f"friend then gives {given} of their {things} to {receiver}. How many {things} does "
        f"each friend have left?"
    )
    return MathProblem(
        topic="sharing",
        question=question,
        answer=left,
        rationale=(
            f"Each friend gets {total} / {friends} = {each} {things}.",
            f"After giving {given} away, each friend has {each} - {given} = {left} {things}.",
        ),
        restatement=(
            f"{total} {things} are split equally between {friends} friends, and then every "
            f"friend gives {given} away. We need what one friend keeps."
        ),
        steps=(
            MathStep(
                "Share the items equally.",
                f"Dividing {total} {things} among {friends} friends:",
                f"{total} / {friends} = {each}",
            ),
            MathStep(
                "Take away what each friend gives.",
                f"Each friend gives {given} {things} to {receiver}:",
                f"{each} - {given} = {left}",
            ),
        ),
        check=(
            f"{friends} friends with {each} {things} each make {friends} * {each} = {total}, "
            f"the number {name} started with."
        ),
    )


def _discount(rng: random.Random) -> MathProblem:
    item = rng.choice(_SALE_ITEMS)
    price = rng.randrange(40, 301, 20)
    percent = rng.choice((10, 20, 25, 50))
    saving = price * percent // 100
    final = price - saving
    question = (
        f"A {item} costs ${price}. The shop offers a {percent}% discount on it. How much does "
        f"the {item} cost after the discount, in dollars?"
    )
    return MathProblem(
        topic="discount",
        question=question,
        answer=final,
        rationale=(
            f"The discount is {percent}% of {price}, which is {price} * {percent} / 100 = "
            f"{saving} dollars.",
            f"The new price is {price} - {saving} = {final} dollars.",
        ),
        restatement=(
            f"The {item} is reduced by {percent}% of its price of ${price}; we need the price "
            f"after the reduction."
        ),
        steps=(
            MathStep(
                "Compute the discount.",
                f"{percent}% of ${price} is:",
                f"{price} * {percent} / 100 = {saving}",
            ),
            MathStep(
                "Subtract the discount from the price.",
                "The sale price is the original price minus the discount:",
                f"{price} - {saving} = {final}",
            ),
        ),
        check=(
            f"The buyer pays {100 - percent}% of the price, and {price} * {100 - percent} / 100 "
            f"= {final}, the same result."
        ),
    )


def _class_percent(rng: random.Random) -> MathProblem:
    sport = rng.choice(_SPORTS)
    while True:
        students = rng.randrange(20, 61, 4)
        percent = rng.choice((10, 20, 25, 30, 40, 50, 60, 75))
        if students * percent % 100 == 0:
            break
    players = students * percent // 100
    others = students - players
    question = (
        f"In a class of {students} students, {percent}% play {sport}. How many students in the "
        f"class do not play {sport}?"
    )
    return MathProblem(
        topic="percent",
        question=question,
        answer=others,
        rationale=(
            f"{percent}% of {students} is {students} * {percent} / 100 = {players} students.",
            f"So {students} - {players} = {others} students do not play {sport}.",
        ),
        restatement=(
            f"A class has {students} students and {percent}% of them play {sport}; we need the "
            f"number who do not."
        ),
        steps=(
            MathStep(
                f"Count the students who play {sport}.",
                f"{percent}% of {students} students is:",
                f"{students} * {percent} / 100 = {players}",
            ),
            MathStep(
                "Count the rest.",
                "Subtract them from the whole class:",
                f"{students} - {players} = {others}",
            ),
        ),
        check=f"The two groups together give {players} + {others} = {students}, the whole class.",
    )


def _reading(rng: random.Random) -> MathProblem:
    name, she = _person(rng)
    per_day, days = rng.randint(5, 30), rng.randint(3, 9)
    read = per_day * days
    pages = read + rng.randint(10, 80)
    left = pages - read
    question = (
        f"{name} reads {per_day} pages of a {pages}-page book every day. How many pages are "
        f"left for {_OBJECT[she]} to read after {days} days?"
    )
    return MathProblem(
        topic="reading",
        question=question,
        answer=left,
        rationale=(
            f"In {days} days {name} reads {per_day} * {days} = {read} pages.",
            f"That leaves {pages} - {read} = {left} pages.",
        ),
        restatement=(
            f"{name} reads the same number of pages each day; we need how much of the {pages}-page "
            f"book remains after {days} days."
        ),
        steps=(
            MathStep(
                "Pages read so far.",
                f"{per_day} pages a day for {days} days is:",
                f"{per_day} * {days} = {read}",
            ),
            MathStep(
                "Pages remaining.",
                "Subtract the pages read from the length of the book:",
                f"{pages} - {read} = {left}",
            ),
        ),
        check=f"Pages read plus pages left give {read} + {left} = {pages}, the whole book.",
    )


def _saving(rng: random.Random) -> MathProblem:
    name, she = _person(rng)
    goal_item = rng.choice(_SAVING_GOALS)
    weekly, weeks, already = rng.randint(5, 25), rng.randint(3, 12), rng.randint(10, 60)
    price = already + weekly * weeks
    missing = price - already
    her = _POSSESSIVE[she]
    question = (
        f"{name} wants to buy a {goal_item} that costs ${price}. {she.capitalize()} already has "
        f"${already} and saves ${weekly} every week. How many weeks will it take {_OBJECT[she]} "
        f"to have enough money?"
    )
    return MathProblem(
        topic="saving",
        question=question,
        answer=weeks,
        rationale=(
            f"{name} still needs {price} - {already} = {missing} dollars.",
            f"At {weekly} dollars a week that takes {missing} / {weekly} = {weeks} weeks.",
        ),
        restatement=(
            f"{name} has part of the money for the {goal_item} and adds the same amount every "
            f"week; we need how many weeks fill the gap."
        ),
        steps=(
            MathStep(
                "Find the missing amount.",
                f"The {goal_item} costs ${price} and {name} has ${already}:",
                f"{price} - {already} = {missing}",
            ),
            MathStep(
                "Divide by the weekly savings.",
                f"{name} saves ${weekly} each week, so the number of weeks is:",
                f"{missing} / {weekly} = {weeks}",
            ),
        ),
        check=(
            f"After {weeks} weeks {name} has {already} + {weekly} * {weeks} = {price} dollars in "
            f"{her} savings, exactly the price."
        ),
    )


def _baking(rng: random.Random) -> MathProblem:
    name, she = _person(rng)
    per_batch = rng.choice((12, 16, 18, 20, 24))
    batches, eggs = rng.randint(2, 6), rng.randint(2, 4)
    wanted = per_batch * batches
    needed = batches * eggs
    question = (
        f"A recipe uses {eggs} eggs to make a batch of {per_batch} cookies. {name} wants to bake "
        f"{wanted} cookies. How many eggs does {she} need?"
    )
    return MathProblem(
        topic="baking",
        question=question,
        answer=needed,
        rationale=(
            f"{name} needs {wanted} / {per_batch} = {batches} batches.",
            f"That takes {batches} * {eggs} = {needed} eggs.",
        ),
        restatement=(
            f"Each batch of {per_batch} cookies needs {eggs} eggs; we need the eggs for {wanted} "
            f"cookies."
        ),
        steps=(
            MathStep(
                "Count the batches.",
                f"Each batch makes {per_batch} cookies, so {wanted} cookies need:",
                f"{wanted} / {per_batch} = {batches}",
            ),
            MathStep(
                "Count the eggs.",
                f"Each batch uses {eggs} eggs:",
                f"{batches} * {eggs} = {needed}",
            ),
        ),
        check=(
            f"With {needed} eggs and {eggs} eggs per batch {name} can bake {needed} / {eggs} = "
            f"{batches} batches, which is {batches} * {per_batch} = {wanted} cookies."
        ),
    )


def _legs(rng: random.Random) -> MathProblem:
    birds, beasts = rng.choice(_TWO_LEGGED), rng.choice(_FOUR_LEGGED)
    bird_count, beast_count = rng.randint(3, 20), rng.randint(2, 12)
    bird_legs, beast_legs = 2 * bird_count, 4 * beast_count
    total = bird_legs + beast_legs
    question = (
        f"A farm has {bird_count} {birds} and {beast_count} {beasts}. How many legs do these "
        f"animals have altogether?"
    )
    return MathProblem(
        topic="legs",
        question=question,
        answer=total,
        rationale=(
            f"The {birds} have {bird_count} * 2 = {bird_legs} legs.",
            f"The {beasts} have {beast_count} * 4 = {beast_legs} legs.",
            f"Altogether there are {bird_legs} + {beast_legs} = {total} legs.",
        ),
        restatement=(
            f"{birds.capitalize()} have 2 legs and {beasts} have 4 legs; we need the total number "
            f"of legs on the farm."
        ),
        steps=(
            MathStep(
                f"Legs of the {birds}.",
                f"Each of the {bird_count} {birds} has 2 legs:",
                f"{bird_count} * 2 = {bird_legs}",
            ),
            MathStep(
                f"Legs of the {beasts}.",
                f"Each of the {beast_count} {beasts} has 4 legs:",
                f"{beast_count} * 4 = {beast_legs}",
            ),
            MathStep(
                "Add them up.",
                "The total number of legs is:",
                f"{bird_legs} + {beast_legs} = {total}",
            ),
        ),
        check=f"Removing the {beasts}' legs leaves {total} - {beast_legs} = {bird_legs}, two for each of the {bird_count} {birds}.",
    )


def _bus(rng: random.Random) -> MathProblem:
    start = rng.randint(10, 40)
    off_1 = rng.randint(1, start - 1)
    on_1 = rng.randint(2, 15)
    after_1 = start - off_1 + on_1
    off_2 = rng.randint(1, after_1 - 1)
    on_2 = rng.randint(0, 12)
    after_2 = after_1 - off_2 + on_2
    question = (
        f"A bus leaves the station with {start} passengers. At the first stop {off_1} people get "
        f"off and {on_1} get on. At the second stop {off_2} people get off and {on_2} get on. "
        f"How many passengers are on the bus now?"
    )
    return MathProblem(
        topic="bus",
        question=question,
        answer=after_2,
        rationale=(
            f"After the first stop there are {start} - {off_1} + {on_1} = {after_1} passengers.",
            f"After the second stop there are {after_1} - {off_2} + {on_2} = {after_2} passengers.",
        ),
        restatement=(
            f"The bus starts with {start} passengers and its count changes at two stops; we "
            f"follow the count stop by stop."
        ),
        steps=(
            MathStep(
                "First stop.",
                f"{off_1} people leave and {on_1} board:",
                f"{start} - {off_1} + {on_1} = {after_1}",
            ),
            MathStep(
                "Second stop.",
                f"{off_2} people leave and {on_2} board:",
                f"{after_1} - {off_2} + {on_2} = {after_2}",
            ),
        ),
        check=(
            f"The net change is {on_1 + on_2} boarding minus {off_1 + off_2} leaving, and "
            f"{start} + {on_1 + on_2} - {off_1 + off_2} = {after_2}."
        ),
    )


def _fence(rng: random.Random) -> MathProblem:
    length, width = rng.randint(10, 40), rng.randint(5, 25)
    cost = rng.randint(2, 9)
    perimeter = 2 * (length + width)
    total = perimeter * cost
    question = (
        f"A farmer puts a fence around a rectangular field that is {length} metres long and "
        f"{width} metres wide. The fence costs ${cost} per metre. How much does the whole fence "
        f"cost, in dollars?"
    )
    return MathProblem(
        topic="fence",
        question=question,
        answer=total,
        rationale=(
            f"The perimeter is 2 * ({length} + {width}) = {perimeter} metres.",
            f"The fence costs {perimeter} * {cost} = {total} dollars.",
        ),
        restatement=(
            "The fence runs along all four sides of the field, so we need the perimeter and then "
            "the price of that many metres."
        ),
        steps=(
            MathStep(
                "Find the perimeter.",
                "A rectangle has two lengths and two widths:",
                f"2 * ({length} + {width}) = {perimeter}",
            ),
            MathStep(
                "Find the cost.",
                f"Each metre of fence costs ${cost}:",
                f"{perimeter} * {cost} = {total}",
            ),
        ),
        check=f"Dividing the cost by the price per metre gives {total} / {cost} = {perimeter} metres, the perimeter.",
    )


def _wages(rng: random.Random) -> MathProblem:
    name, she = _person(rng)
    job = rng.choice(_JOBS)
    rate, hours, days = rng.randint(8, 25), rng.randint(3, 8), rng.randint(2, 6)
    per_day = rate * hours
    total = per_day * days
    question = (
        f"{name} works {job} and earns ${rate} per hour. {she.capitalize()} works {hours} hours a "
        f"day for {days} days. How much does {name} earn in total, in dollars?"
    )
    return MathProblem(
        topic="wages",
        question=question,
        answer=total,
        rationale=(
            f"Each day {name} earns {rate} * {hours} = {per_day} dollars.",
            f"Over {days} days that is {per_day} * {days} = {total} dollars.",
        ),
        restatement=(
            f"{name} is paid by the hour; we need the pay for {hours} hours a day over {days} days."
        ),
        steps=(
            MathStep(
                "Pay for one day.",
                f"{hours} hours at ${rate} per hour:",
                f"{rate} * {hours} = {per_day}",
            ),
            MathStep(
                "Pay for all days.",
                f"The same pay for {days} days:",
                f"{per_day} * {days} = {total}",
            ),
        ),
        check=(
            f"{name} works {hours} * {days} = {hours * days} hours in total, and {hours * days} "
            f"* {rate} = {total} dollars, the same amount."
        ),
    )


MATH_TEMPLATES: dict[str, Callable[[random.Random], MathProblem]] = {
    "shopping": _shopping,
    "travel": _travel,
    "ages": _ages,
    "area": _area,
    "sharing": _sharing,
    "discount": _discount,
    "percent": _class_percent,
    "reading": _reading,
    "saving": _saving,
    "baking": _baking,
    "legs": _legs,
    "bus": _bus,
    "fence": _fence,
    "wages": _wages,
}


def math_problems(seed: int, count: int) -> list[MathProblem]:
    """`count` distinct word problems drawn from `seed`, cycling through all templates.

    Each cycle visits every template once in a seeded order, so any 14 consecutive problems
    cover all kinds of question.
    """
    rng = random.Random(seed)
    problems: list[MathProblem] = []
    seen: set[str] = set()
    order: list[str] = []
    while len(problems) < count:
        if not order:
            order = sorted(MATH_TEMPLATES)
            rng.shuffle(order)
        problem = MATH_TEMPLATES[order.pop()](rng)
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    return problems
