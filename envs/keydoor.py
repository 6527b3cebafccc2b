"""`uopd/KeyDoor-v0`: walk a generated map of rooms, picking up keys and unlocking doors.

The map is a tree of rooms laid out on a grid (so compass directions are consistent): a main
path from room 0 to the goal room, with locked doors on it, plus dead-end side rooms (some
behind locked doors of their own). Main-path rooms are numbered 0..goal in order; side rooms
get the numbers after the goal. Every key opens the one door of its colour.

Observation (one line)::

    [feedback. ]room 2 (goal 5). doors: n:3(locked red) e:7. items: red key. inv: -. way: n(locked red)

`doors` lists `direction:room` for every exit, `items` the keys lying here, `inv` the keys
held (`-` for none), `way` the door on the way to the goal (a signpost, with its lock if any;
`signpost=False` leaves it out, so the agent must work the way out from the room numbers).
The signpost is on by default because finding "the exit to room r+1" among the doors is a
lookup the zoo's small CPU-trained transformers do not learn in their budget (docs/agent.md,
Zoo), while fetching the right key, opening and walking through in order -- and recovering
after a wrong turn -- remains the multi-step task. Feedback is `took red key`, `opened n`, or an error such as
`invalid action`, `no door s`, `n is locked`, `no blue key here`, `need red key`.
On reaching the goal the observation is `room 5. goal reached.`

Actions: `go <d>`, `open <d>`, `take <colour> key`, with `<d>` one of n/e/s/w (or
north/east/south/west).

Reward: 1 on entering the goal room (terminates, `success`); `-invalid_penalty` for an action
that is unparseable or has no effect; 0 otherwise.

Generation (from the reset seed): `depth` is the number of expert actions from the start to
the goal: `moves + 2 * locks` (each locked door on the path costs a take and an open). Keys
for path doors lie on the path at most `key_distance` rooms before their door, so with the
default 0 the right key is always in the room whose exit it opens.

Expert: `env.unwrapped.expert_action()`; optimal from any reachable state (the map is a tree,
so it fetches the keys needed on the remaining path in one sweep and walks toward the goal).
"""

from __future__ import annotations

from .text_env import TextEnv

STEPS = {"n": (0, 1), "e": (1, 0), "s": (0, -1), "w": (-1, 0)}
OPPOSITE = {"n": "s", "s": "n", "e": "w", "w": "e"}
DIRECTION_WORDS = {"north": "n", "east": "e", "south": "s", "west": "w", **{d: d for d in STEPS}}
COLORS = ("red", "blue", "green", "yellow", "white", "black", "purple", "orange")


class KeyDoorEnv(TextEnv):
    def __init__(
        self,
        depth: int = 6,
        side_rooms: int = 2,
        key_distance: int = 0,
        max_turns: int | None = None,
        invalid_penalty: float = 0.1,
        signpost: bool = True,
        render_mode: str | None = None,
    ):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        super().__init__(
            max_turns=max_turns if max_turns is not None else 3 * depth,
            invalid_penalty=invalid_penalty,
            obs_max_length=512,
            action_max_length=64,
            render_mode=render_mode,
        )
        self.depth = depth
        self.side_rooms = side_rooms
        self.key_distance = key_distance
        self.signpost = signpost

    def _start(self) -> str:
        self._generate()
        return self._describe()

    def _generate(self) -> None:
        rng = self.np_random
        max_locks = min(self.depth // 3, len(COLORS))
        n_locks = int(rng.integers(min(1, max_locks), max_locks + 1))
        path = self._walk(self.depth - 2 * n_locks)
        self.goal = len(path) - 1
        cells = {cell: room for room, cell in enumerate(path)}
        self.exits: list[dict[str, int]] = [{} for _ in path]
        for room in range(self.goal):
            self._connect(room, room + 1, _direction(path[room], path[room + 1]))

        colors = [str(c) for c in rng.permutation(COLORS)]
        self.locks: dict[frozenset, str] = {}
        self.items: dict[int, list[str]] = {}
        for edge in sorted(int(e) for e in rng.choice(self.goal, size=n_locks, replace=False)):
            color = colors.pop()
            self.locks[frozenset((edge, edge + 1))] = color
            self._place_key(color, int(rng.integers(max(0, edge - self.key_distance), edge + 1)))

        for _ in range(self.side_rooms):
            free = [
                (room, d)
                for room in range(self.goal)
                for d in STEPS
                if _shift(path[room], d) not in cells and d not in self.exits[room]
            ]
            if not free:
                break
            room, d = free[int(rng.integers(len(free)))]
            side = len(self.exits)
            self.exits.append({})
            cells[_shift(path[room], d)] = side
            self._connect(room, side, d)
            if colors and rng.random() < 0.5:
                color = colors.pop()
                self.locks[frozenset((room, side))] = color
                self._place_key(color, int(rng.integers(room + 1)))

        self.room = 0
        self.inventory: list[str] = []
        self._toward_goal = self._parents()

    def _walk(self, moves: int) -> list[tuple[int, int]]:
        # A self-avoiding walk can trap itself; restarting is cheap at these sizes.
        while True:
            path = [(0, 0)]
            while len(path) <= moves:
                options = [d for d in STEPS if _shift(path[-1], d) not in path]
                if not options:
                    break
                path.append(_shift(path[-1], options[int(self.np_random.integers(len(options)))]))
            if len(path) == moves + 1:
                return path

    def _connect(self, a: int, b: int, d: str) -> None:
        self.exits[a][d] = b
        self.exits[b][OPPOSITE[d]] = a

    def _place_key(self, color: str, room: int) -> None:
        self.items.setdefault(room, []).append(color)

    def _parents(self) -> dict[int, tuple[str, int]]:
        """For every room but the goal: the exit (direction, room) one step closer to the goal."""
        parents, frontier = {}, [self.goal]
        while frontier:
            room = frontier.pop()
            for d, nxt in self.exits[room].items():
                if nxt != self.goal and nxt not in parents:
                    parents[nxt] = (OPPOSITE[d], room)
                    frontier.append(nxt)
        return parents

    def _describe(self, feedback: str = "") -> str:
        doors = []
        for d in "nesw":
            if d in self.exits[self.room]:
                nxt = self.exits[self.room][d]
                lock = self.locks.get(frozenset((self.room, nxt)))
                doors.append(f"{d}:{nxt}" + (f"(locked {lock})" if lock else ""))
        items = ", ".join(f"{c} key" for c in self.items.get(self.room, [])) or "-"
        inv = ", ".join(f"{c} key" for c in self.inventory) or "-"
        prefix = f"{feedback}. " if feedback else ""
        text = f"{prefix}room {self.room} (goal {self.goal}). doors: {' '.join(doors)}. items: {items}. inv: {inv}"
        if self.signpost:
            d, nxt = self._toward_goal[self.room]
            lock = self.locks.get(frozenset((self.room, nxt)))
            text += f". way: {d}" + (f"(locked {lock})" if lock else "")
        return text

    def _act(self, action: str) -> tuple[str, float, bool]:
        words = action.lower().split()
        if len(words) == 2 and words[0] in ("go", "open") and words[1] in DIRECTION_WORDS:
            return (self._go if words[0] == "go" else self._open)(DIRECTION_WORDS[words[1]])
        if len(words) == 3 and words[0] == "take" and words[2] == "key":
            return self._take(words[1])
        return self._fail("invalid action")

    def _fail(self, message: str) -> tuple[str, float, bool]:
        return self._describe(message), -self.invalid_penalty, False

    def _go(self, d: str) -> tuple[str, float, bool]:
        if d not in self.exits[self.room]:
            return self._fail(f"no door {d}")
        nxt = self.exits[self.room][d]
        if frozenset((self.room, nxt)) in self.locks:
            return self._fail(f"{d} is locked")
        self.room = nxt
        if nxt == self.goal:
            self._success = True
            return f"room {nxt}. goal reached.", 1.0, True
        return self._describe(), 0.0, False

    def _open(self, d: str) -> tuple[str, float, bool]:
        if d not in self.exits[self.room]:
            return self._fail(f"no door {d}")
        edge = frozenset((self.room, self.exits[self.room][d]))
        if edge not in self.locks:
            return self._fail(f"{d} is not locked")
        if self.locks[edge] not in self.inventory:
            return self._fail(f"need {self.locks[edge]} key")
        del self.locks[edge]
        return self._describe(f"opened {d}"), 0.0, False

    def _take(self, color: str) -> tuple[str, float, bool]:
        here = self.items.get(self.room, [])
        if color not in here:
            return self._fail(f"no {color} key here")
        here.remove(color)
        self.inventory.append(color)
        return self._describe(f"took {color} key"), 0.0, False

    def expert_action(self) -> str:
        route, room = [], self.room
        while room != self.goal:
            d, nxt = self._toward_goal[room]
            route.append((room, d, nxt))
            room = nxt
        needed = {self.locks[frozenset((a, b))] for a, _, b in route if frozenset((a, b)) in self.locks}
        needed -= set(self.inventory)
        for color in self.items.get(self.room, []):
            if color in needed:
                return f"take {color} key"
        for key_room, colors in sorted(self.items.items()):
            if needed.intersection(colors):
                detour = self._first_step(key_room)
                if detour is not None:
                    return self._through(detour)
        return self._through(route[0][1])

    def _first_step(self, target: int) -> str | None:
        """Direction from the current room into the branch (away from the goal) holding `target`."""
        room = target
        while room != self.goal:
            d, nxt = self._toward_goal[room]
            if nxt == self.room:
                return OPPOSITE[d]
            room = nxt
        return None

    def _through(self, d: str) -> str:
        edge = frozenset((self.room, self.exits[self.room][d]))
        return f"open {d}" if edge in self.locks else f"go {d}"


def _shift(cell: tuple[int, int], d: str) -> tuple[int, int]:
    return cell[0] + STEPS[d][0], cell[1] + STEPS[d][1]


def _direction(a: tuple[int, int], b: tuple[int, int]) -> str:
    return next(d for d in STEPS if _shift(a, d) == b)
