"""`uopd/Shop-v0`: a small WebShop-like store: search, open a product, pick its options, buy.

Each reset generates a catalogue of `n_products` products. A product has a type (shirt, mug,
...), one material/style attribute, a price and selectable options (every type has a colour;
clothes and shoes also a size). The task names the wanted type, attribute, options and a
budget; exactly one product matches type, attribute and budget, and it offers the wanted
options.

Observations start with the task and show the current page::

    task: buy cotton shirt, red, size m, under $30. page: search
    task: ... results: [1] cotton shirt $24; [2] cotton shirt $38; [3] wool shirt $12
    task: ... cotton shirt $24. color: red|blue. size: s|m|l. chosen: red
    bought cotton shirt (red, m) for $24. reward 1.00

Errors are prefixed: `invalid action. task: ...`.

Actions: `search <words>` (search page only; results are the products sharing most words
with the query, at most `n_results`, cheapest first), `click <n>` (the n-th result; a
position rather than a product id, because copying ids is what the zoo's small CPU-trained
agents fail to learn, see docs/agent.md, Zoo),
`select <value>` (an option value of the open product; replaces the earlier choice of that
option), `buy` (on a product page; ends the episode), `back` (product -> results -> search).

Reward at `buy`, as in WebShop: `type_factor * (attribute match + matched options +
[price <= budget]) / (1 + n_options + 1)`, with `type_factor` 1 for the right product type and
0.1 otherwise; `success` iff the reward is 1. Invalid actions cost `invalid_penalty`.

Expert: `env.unwrapped.expert_action()` -- search `<attribute> <type>`, click the matching
product, select each wanted option, buy (`3 + n_options` actions from the start); from a wrong
page it goes `back`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .text_env import TextEnv

COLORS = ("red", "blue", "black", "white", "green", "gray")
# type -> (attributes, size values or None, price range)
TYPES = {
    "shirt": (("cotton", "linen", "wool"), ("s", "m", "l", "xl"), (8, 60)),
    "jeans": (("slim", "relaxed", "bootcut"), ("28", "30", "32", "34"), (20, 90)),
    "shoes": (("leather", "canvas", "suede"), ("7", "8", "9", "10"), (25, 120)),
    "mug": (("ceramic", "glass", "steel"), None, (4, 25)),
    "backpack": (("nylon", "canvas", "hiking"), None, (15, 80)),
    "lamp": (("desk", "floor", "clip"), None, (10, 70)),
}


@dataclass(eq=False)
class Product:
    kind: str
    attribute: str
    price: int
    options: dict[str, list[str]]

    @property
    def title(self) -> str:
        return f"{self.attribute} {self.kind}"


class ShopEnv(TextEnv):
    def __init__(
        self,
        n_products: int = 12,
        n_results: int = 4,
        max_turns: int = 12,
        invalid_penalty: float = 0.1,
        render_mode: str | None = None,
    ):
        if not 1 <= n_products <= 90 or n_results < 2:
            raise ValueError(f"need 1 <= n_products <= 90 and n_results >= 2, got {n_products}, {n_results}")
        super().__init__(
            max_turns=max_turns,
            invalid_penalty=invalid_penalty,
            obs_max_length=512,
            action_max_length=128,
            render_mode=render_mode,
        )
        self.n_products = n_products
        self.n_results = n_results

    def _start(self) -> str:
        self._generate()
        self.page = "search"
        self.results: list[Product] = []
        self.product: Product | None = None
        self.chosen: dict[str, str] = {}
        return self._describe()

    def _generate(self) -> None:
        rng = self.np_random
        kinds = list(TYPES)
        kind = kinds[int(rng.integers(len(kinds)))]
        attributes, sizes, (low, high) = TYPES[kind]
        attribute = attributes[int(rng.integers(len(attributes)))]
        price = int(rng.integers(low, high - 5))
        self.budget = (price // 10 + 1) * 10
        self.want = {"color": COLORS[int(rng.integers(len(COLORS)))]}
        if sizes:
            self.want["size"] = sizes[int(rng.integers(len(sizes)))]

        self.target = Product(kind, attribute, price, self._options(kind, self.want))
        self.catalogue = [self.target]
        lookalikes = 0
        for _ in range(self.n_products - 1):
            other = kinds[int(rng.integers(len(kinds)))]
            other_attrs, _, (lo, hi) = TYPES[other]
            other_attr = other_attrs[int(rng.integers(len(other_attrs)))]
            if (other, other_attr) == (kind, attribute):
                # Same title as the target: keep at most a few, all over budget, so the
                # results page alone identifies the one product that fits.
                lookalikes += 1
                if lookalikes >= self.n_results:
                    other_attr = next(a for a in other_attrs if a != attribute)
                else:
                    lo, hi = self.budget + 1, self.budget + 30
            cost = int(rng.integers(lo, hi))
            self.catalogue.append(Product(other, other_attr, cost, self._options(other, {})))

    def _options(self, kind: str, must: dict[str, str]) -> dict[str, list[str]]:
        rng = self.np_random
        sizes = TYPES[kind][1]
        dims = {"color": COLORS, **({"size": sizes} if sizes else {})}
        options = {}
        for dim, values in dims.items():
            picked = {str(v) for v in rng.choice(values, size=int(rng.integers(1, 4)), replace=False)}
            if dim in must:
                picked.add(must[dim])
            options[dim] = [v for v in values if v in picked]
        return options

    def _task(self) -> str:
        size = f", size {self.want['size']}" if "size" in self.want else ""
        return f"task: buy {self.target.title}, {self.want['color']}{size}, under ${self.budget}."

    def _describe(self, feedback: str = "") -> str:
        prefix = f"{feedback}. " if feedback else ""
        if self.page == "search":
            body = "page: search"
        elif self.page == "results":
            body = "results: " + ("; ".join(f"[{i}] {p.title} ${p.price}" for i, p in enumerate(self.results, 1)) or "none")
        else:
            p = self.product
            opts = " ".join(f"{dim}: {'|'.join(values)}." for dim, values in p.options.items())
            chosen = ", ".join(self.chosen[d] for d in p.options if d in self.chosen) or "-"
            body = f"{p.title} ${p.price}. {opts} chosen: {chosen}"
        return f"{prefix}{self._task()} {body}"

    def _act(self, action: str) -> tuple[str, float, bool]:
        verb, _, arg = action.lower().partition(" ")
        arg = arg.strip()
        if verb == "search" and arg and self.page == "search":
            return self._search(arg.split())
        if verb == "click" and self.page == "results" and arg.isdigit() and 1 <= int(arg) <= len(self.results):
            self.page, self.product, self.chosen = "product", self.results[int(arg) - 1], {}
            return self._describe(), 0.0, False
        if verb == "select" and self.page == "product":
            for dim, values in self.product.options.items():
                if arg in values:
                    self.chosen[dim] = arg
                    return self._describe(), 0.0, False
        if verb == "buy" and not arg and self.page == "product":
            return self._buy()
        if verb == "back" and not arg and self.page != "search":
            self.page = "results" if self.page == "product" else "search"
            return self._describe(), 0.0, False
        return self._describe("invalid action"), -self.invalid_penalty, False

    def _search(self, words: list[str]) -> tuple[str, float, bool]:
        query = set(words)
        scored = [(len(query & {p.kind, p.attribute}), i, p) for i, p in enumerate(self.catalogue)]
        ranked = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[2].price, s[1]))
        self.results = [p for _, _, p in ranked[: self.n_results]]
        self.page = "results"
        return self._describe(), 0.0, False

    def _buy(self) -> tuple[str, float, bool]:
        p = self.product
        hits = (p.attribute == self.target.attribute) + (p.price <= self.budget)
        hits += sum(self.chosen.get(dim) == value for dim, value in self.want.items())
        type_factor = 1.0 if p.kind == self.target.kind else 0.1
        reward = type_factor * hits / (len(self.want) + 2)
        self._success = reward == 1.0
        chosen = ", ".join(self.chosen[d] for d in p.options if d in self.chosen) or "no options"
        return f"bought {p.title} ({chosen}) for ${p.price}. reward {reward:.2f}", reward, True

    def expert_action(self) -> str:
        if self.page == "search":
            return f"search {self.target.attribute} {self.target.kind}"
        if self.page == "results":
            return f"click {self.results.index(self.target) + 1}" if self.target in self.results else "back"
        if self.product is not self.target:
            return "back"
        for dim, value in self.want.items():
            if self.chosen.get(dim) != value:
                return f"select {value}"
        return "buy"
