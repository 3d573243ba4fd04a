"""A synthetic social-crawl generator whose memory is bounded by one block.

The model (all parameters in :class:`SyntheticSpec`):

* ``N`` users in ``C`` latent communities; user ``u`` is in community
  ``u % C`` and has popularity rank ``k = u // C`` inside it. Follow targets
  are drawn with rank ``k = floor(M * U**skew)`` (``skew > 1``): low ranks are
  hubs, and in-degrees fall off as a power law (Zipf exponent ``1 - 1/skew``).
* Out-degrees are Pareto(``follow_tail``) with mean ``follows_per_user``; a
  share ``in_community`` of follows stay inside the community, a share
  ``reciprocity`` is followed back.
* Bots (``bot_rate`` of users, ranks ``k % P == P // 2``) follow 2.5x as many
  accounts, a tenth of them other bots, are almost never followed by humans or
  followed back, post twice as much and in bursts. Their own features carry only a weak bot signal: the
  graph (who they follow, who retweets them) is what gives them away.
* Posts: each user writes ~``posts_per_user`` (heavy-tailed with activity).
  A post's "text embedding" sits near its topic's centroid. Rumours are more
  often posted by bots, retweeted 3x more, faster, by more bots and across
  communities: ``is_rumor`` depends on author and cascade shape.
* Labels come from the latent structure plus noise, with missing rates in
  ``missing``: ``interest`` (community topic), ``influence`` (log expected
  followers + activity), ``is_bot``, ``is_rumor``; ``retweets`` is the link task.

Every per-user quantity is a counter-based hash of ``(seed, field, user)``, so
any user's attributes can be computed without generating the rest of the
graph. Users are generated in fixed blocks of ``BLOCK_USERS`` and rows are
re-cut into shards afterwards, so the content does not depend on the shard
size, and blocks can be generated in parallel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

BLOCK_USERS = 4096
USER_WIDTH, POST_WIDTH, REGIONS = 32, 64, 12
MAX_POSTS = 1023  # post id = user id * 1024 + j
T0 = 1_700_000_000  # crawl start, epoch seconds
SPAN = 90 * 86400

PRESETS = {"small": 2_000, "medium": 50_000, "large": 2_000_000}


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the generator; defaults give ~50 edges per user."""

    users: int
    posts_per_user: float = 4.0
    seed: int = 0
    communities: int | None = None  # default: about users ** (1/3), between 4 and 64
    interest_classes: int = 8
    follows_per_user: float = 16.0
    follow_tail: float = 2.2
    popularity_skew: float = 2.5
    in_community: float = 0.85
    reciprocity: float = 0.25
    bot_rate: float = 0.05
    retweets_per_post: float = 3.0
    reply_rate: float = 0.3
    mention_rate: float = 0.5
    feature_signal: float = 0.3  # community signal in user features, in units of noise std
    label_noise: float = 0.1
    missing: dict = field(default_factory=lambda: {"interest": 0.6, "influence": 0.5, "is_bot": 0.7, "is_rumor": 0.8})

    def __post_init__(self):
        if self.users < 16:
            raise ValueError("users must be at least 16")
        if self.posts_per_user < 0 or self.follows_per_user <= 0:
            raise ValueError("posts_per_user must be >= 0 and follows_per_user > 0")
        if not 0 < self.bot_rate < 0.5:
            raise ValueError("bot_rate must be in (0, 0.5)")
        for name, rate in self.missing.items():
            if not 0 <= rate < 1:
                raise ValueError(f"missing rate of {name!r} must be in [0, 1)")

    @property
    def num_communities(self) -> int:
        if self.communities is not None:
            return self.communities
        return int(min(64, max(4, round(self.users ** (1 / 3)))))

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.users / BLOCK_USERS)


def schema_dict(spec: SyntheticSpec) -> dict:
    """The ``graph.yaml`` of a generated crawl."""
    return {
        "name": f"synthetic-{spec.users}",
        "node_types": {
            "user": {"features": [{"name": "profile", "kind": "vector", "width": USER_WIDTH},
                                  {"name": "region", "kind": "categorical", "num_categories": REGIONS}],
                     "labels": ["interest", "influence", "is_bot"]},
            "post": {"features": [{"name": "text", "kind": "vector", "width": POST_WIDTH},
                                  {"name": "ts", "kind": "numeric"}],
                     "labels": ["is_rumor"]},
        },
        "relations": {
            "follows": {"src": "user", "dst": "user", "self_loops": "drop", "duplicates": "drop"},
            "authored": {"src": "user", "dst": "post"},
            "retweets": {"src": "user", "dst": "post", "attributes": ["ts"], "duplicates": "drop"},
            "replies": {"src": "post", "dst": "post", "attributes": ["ts"]},
            "mentions": {"src": "post", "dst": "user", "duplicates": "drop"},
        },
        "tasks": [
            {"name": "interest", "type": "multiclass", "node_type": "user", "label": "interest",
             "num_classes": min(spec.interest_classes, spec.num_communities)},
            {"name": "influence", "type": "regression", "node_type": "user", "label": "influence"},
            {"name": "is_bot", "type": "binary", "node_type": "user", "label": "is_bot"},
            {"name": "is_rumor", "type": "binary", "node_type": "post", "label": "is_rumor"},
            {"name": "retweets", "type": "link", "relation": "retweets"},
        ],
    }


# --- counter-based randomness: any (field, id) pair gets its own stream ----

_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised; uint64 arithmetic wraps by design."""
    with np.errstate(over="ignore"):
        x = x + _GOLD
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _key(seed: int, name: str) -> np.uint64:
    h = np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)
    for ch in name.encode():
        h = _mix(h ^ np.uint64(ch))
    return h[0]


def uniform(seed: int, name: str, ids: np.ndarray) -> np.ndarray:
    """U[0,1) floats, one per id, for stream ``name``: the same id gets the same value."""
    with np.errstate(over="ignore"):
        x = _mix(np.asarray(ids, dtype=np.int64).astype(np.uint64) * _M2 + _key(seed, name))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def normal(seed: int, name: str, ids: np.ndarray) -> np.ndarray:
    u1 = np.maximum(uniform(seed, name + ".a", ids), 1e-300)
    u2 = uniform(seed, name + ".b", ids)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * np.pi * u2)


class Latent:
    """Per-user latent attributes, computable for any user ids."""

    def __init__(self, spec: SyntheticSpec):
        self.spec = spec
        self.n, self.c = spec.users, spec.num_communities
        self.bot_period = max(2, round(1 / spec.bot_rate))
        self.bot_phase = self.bot_period // 2
        rng = np.random.default_rng(spec.seed)
        self.user_centroids = rng.standard_normal((self.c, USER_WIDTH))
        self.topic_centroids = rng.standard_normal((spec.interest_classes, POST_WIDTH))
        # Users are written under a scrambled id so that row order leaks nothing.
        self.scramble = next(a for a in range(int(self.n * 0.6180339887) | 1, 4 * self.n + 3, 2) if math.gcd(a, self.n) == 1)

    def raw_id(self, u: np.ndarray) -> np.ndarray:
        return 10_000_000 + (self.scramble * u.astype(np.int64) + 7) % self.n

    def members(self, community: np.ndarray) -> np.ndarray:
        return (self.n - community + self.c - 1) // self.c

    def is_bot(self, u: np.ndarray) -> np.ndarray:
        return (u // self.c) % self.bot_period == self.bot_phase

    def activity(self, u: np.ndarray) -> np.ndarray:
        return np.exp(0.75 * normal(self.spec.seed, "activity", u)) * np.where(self.is_bot(u), 2.0, 1.0)

    def num_posts(self, u: np.ndarray) -> np.ndarray:
        e = -np.log(np.maximum(uniform(self.spec.seed, "posts", u), 1e-12))
        return np.minimum(np.floor(e * self.spec.posts_per_user * self.activity(u)), MAX_POSTS).astype(np.int64)

    def out_degree(self, u: np.ndarray) -> np.ndarray:
        alpha = self.spec.follow_tail
        dmin = self.spec.follows_per_user * (alpha - 1) / alpha
        d = dmin * np.maximum(uniform(self.spec.seed, "outdeg", u), 1e-12) ** (-1 / alpha)
        d = np.where(self.is_bot(u), 2.5 * self.spec.follows_per_user * (0.5 + uniform(self.spec.seed, "botdeg", u)), d)
        return np.minimum(np.floor(d), min(self.n - 1, 5000)).astype(np.int64)

    def expected_followers(self, u: np.ndarray) -> np.ndarray:
        """Mean in-degree implied by rank sampling: density of k under floor(M * U**skew)."""
        skew, k = self.spec.popularity_skew, (u // self.c).astype(np.float64)
        m = self.members(u % self.c).astype(np.float64)
        density = ((k + 1) / m) ** (1 / skew) - (k / m) ** (1 / skew)
        return self.spec.follows_per_user * m * density * np.where(self.is_bot(u), 0.1, 1.0)

    def interest(self, community: np.ndarray) -> np.ndarray:
        return community % min(self.spec.interest_classes, self.c)

    def pick_users(self, name: str, keys: np.ndarray, community: np.ndarray, bots: np.ndarray | None = None) -> np.ndarray:
        """One user per key in ``community``: by popularity rank, or a uniform bot where ``bots``."""
        seed, m = self.spec.seed, self.members(community)
        rank = np.floor(m * uniform(seed, name + ".rank", keys) ** self.spec.popularity_skew).astype(np.int64)
        if bots is not None and bots.any():
            n_bots = np.maximum((m - self.bot_phase + self.bot_period - 1) // self.bot_period, 1)
            j = np.floor(uniform(seed, name + ".bot", keys) * n_bots).astype(np.int64)
            rank = np.where(bots, j * self.bot_period + self.bot_phase, rank)
        return community + np.minimum(rank, m - 1) * self.c

    def other_community(self, name: str, keys: np.ndarray, community: np.ndarray, stay: float) -> np.ndarray:
        move = uniform(self.spec.seed, name + ".move", keys) >= stay
        other = np.floor(uniform(self.spec.seed, name + ".to", keys) * self.c).astype(np.int64)
        return np.where(move, other, community)


# --- one block of users -> rows of every table --------------------------------


def _repeat_index(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner position, index within owner) for ``counts[i]`` items per owner."""
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return owner, np.arange(int(counts.sum())) - starts[owner]


def _labels(values: np.ndarray, present: np.ndarray, dtype: pa.DataType) -> pa.Array:
    return pa.array(values, type=dtype, mask=~present)


def _vectors(matrix: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.astype(np.float32).ravel()), matrix.shape[1])


def generate_block(lat: Latent, block: int) -> dict[tuple[str, str], pa.Table]:
    """All rows owned by users of ``block``: the users, their posts and every edge they start."""
    spec, seed = lat.spec, lat.spec.seed
    users = np.arange(block * BLOCK_USERS, min((block + 1) * BLOCK_USERS, lat.n), dtype=np.int64)
    rng = np.random.default_rng([seed, 7, block])
    comm, bot = users % lat.c, lat.is_bot(users)
    out: dict[tuple[str, str], pa.Table] = {}

    # Users: a weak community signal drowned in noise, activity stats, a weak bot signal.
    profile = rng.standard_normal((len(users), USER_WIDTH))
    profile[:, :24] += spec.feature_signal * lat.user_centroids[comm, :24]
    profile[:, 24] += 0.5 * np.log1p(lat.out_degree(users))
    profile[:, 25] += 0.5 * np.log1p(lat.num_posts(users))
    profile[:, 28:] += 0.25 * bot[:, None]
    region = np.where(uniform(seed, "region", users) < 0.3, comm % REGIONS, rng.integers(0, REGIONS, len(users)))
    flip = uniform(seed, "interest.noise", users) < spec.label_noise
    interest = np.where(flip, rng.integers(0, min(spec.interest_classes, lat.c), len(users)), lat.interest(comm))
    influence = np.log1p(lat.expected_followers(users)) + 0.3 * np.log(lat.activity(users)) + 0.2 * rng.standard_normal(len(users))
    # Label noise proportional to the class: a flat 3% flip would make a third of "bots" humans.
    noise = uniform(seed, "bot.noise", users)
    bot_label = np.where(bot, noise >= 0.05, noise < 0.005)
    has = {name: uniform(seed, f"has.{name}", users) >= spec.missing.get(name, 0.0) for name in ("interest", "influence", "is_bot")}
    user_ids = lat.raw_id(users)
    out[("nodes", "user")] = pa.table({
        "id": user_ids, "profile": _vectors(profile), "region": pa.array(region, pa.int64()),
        "interest": _labels(interest, has["interest"], pa.int64()),
        "influence": _labels(influence, has["influence"], pa.float64()),
        "is_bot": _labels(bot_label, has["is_bot"], pa.bool_()),
    })

    # Follows: Pareto out-degree, mostly in-community, popularity-ranked targets, bot rings.
    src_pos, i = _repeat_index(lat.out_degree(users))
    src = users[src_pos]
    slot = src * 8192 + i
    src_bot = bot[src_pos]
    to_comm = lat.other_community("follow", slot, comm[src_pos], spec.in_community)
    to_comm = np.where(src_bot, lat.other_community("follow.bot", slot, comm[src_pos], 0.5), to_comm)
    dst = lat.pick_users("follow", slot, to_comm, bots=src_bot & (uniform(seed, "follow.tobot", slot) < 0.1))
    redraw = ~src_bot & lat.is_bot(dst) & (uniform(seed, "follow.redraw", slot) < 0.97)
    dst = np.where(redraw, lat.pick_users("follow2", slot, to_comm), dst)
    back = uniform(seed, "follow.back", slot) < np.where(src_bot | lat.is_bot(dst), 0.05, spec.reciprocity)
    f_src, f_dst = np.concatenate([src, dst[back]]), np.concatenate([dst, src[back]])
    out[("edges", "follows")] = pa.table({"src": lat.raw_id(f_src), "dst": lat.raw_id(f_dst)})

    # Posts: heavy-tailed counts, text around the topic centroid, bursty bots.
    author_pos, j = _repeat_index(lat.num_posts(users))
    author = users[author_pos]
    pid = author * (MAX_POSTS + 1) + j
    post_raw = user_ids[author_pos] * (MAX_POSTS + 1) + j
    author_bot = bot[author_pos]
    rumor = uniform(seed, "rumor", pid) < np.where(author_bot, 0.35, 0.05)
    topic = np.where(uniform(seed, "topic", pid) < 0.8, lat.interest(comm[author_pos]),
                     rng.integers(0, spec.interest_classes, len(pid)))
    text = rng.standard_normal((len(pid), POST_WIDTH)) + 0.5 * lat.topic_centroids[topic]
    text[:, -4:] += 0.2 * rumor[:, None]
    burst = T0 + np.floor(uniform(seed, "burst", author) * SPAN)
    ts = np.where(author_bot, burst + np.floor(uniform(seed, "ts.bot", pid) * 3600),
                  T0 + np.floor(uniform(seed, "ts", pid) * SPAN)).astype(np.int64)
    rumor_label = rumor ^ (uniform(seed, "rumor.noise", pid) < 0.05)
    has_rumor = uniform(seed, "has.is_rumor", pid) >= spec.missing.get("is_rumor", 0.0)
    out[("nodes", "post")] = pa.table({"id": post_raw, "text": _vectors(text), "ts": ts,
                                       "is_rumor": _labels(rumor_label, has_rumor, pa.bool_())})
    out[("edges", "authored")] = pa.table({"src": user_ids[author_pos], "dst": post_raw})

    # Retweet cascades: popular authors and rumours spread further; rumours fast, via bots, across communities.
    reach = np.clip(np.sqrt(lat.expected_followers(author) / spec.follows_per_user), 0.2, 10.0)
    mean_rt = spec.retweets_per_post * reach * np.where(rumor, 3.0, 1.0)
    n_rt = np.minimum(np.floor(-np.log(np.maximum(uniform(seed, "rt.n", pid), 1e-12)) * mean_rt), 4000).astype(np.int64)
    post_pos, k = _repeat_index(n_rt)
    rslot = pid[post_pos] * 4096 + k
    r_rumor = rumor[post_pos]
    r_comm = lat.other_community("rt", rslot, comm[author_pos][post_pos], np.where(r_rumor, 0.3, spec.in_community))
    retweeter = lat.pick_users("rt", rslot, r_comm, bots=uniform(seed, "rt.bot", rslot) < np.where(r_rumor, 0.4, 0.02))
    delay = np.floor(-np.log(np.maximum(uniform(seed, "rt.delay", rslot), 1e-12)) * np.where(r_rumor, 3600, 6 * 3600))
    out[("edges", "retweets")] = pa.table({"src": lat.raw_id(retweeter), "dst": post_raw[post_pos],
                                           "ts": (ts[post_pos] + delay).astype(np.int64)})

    # Replies to a post of someone in the community; mentions of community members.
    replying = uniform(seed, "reply", pid) < spec.reply_rate
    target_user = lat.pick_users("reply", pid, comm[author_pos])
    target_posts = lat.num_posts(target_user)
    replying &= target_posts > 0
    target_j = np.floor(uniform(seed, "reply.j", pid) * np.maximum(target_posts, 1)).astype(np.int64)
    out[("edges", "replies")] = pa.table({
        "src": post_raw[replying],
        "dst": lat.raw_id(target_user[replying]) * (MAX_POSTS + 1) + target_j[replying],
        "ts": ts[replying],
    })
    mentioning = uniform(seed, "mention", pid) < spec.mention_rate
    mentioned = lat.pick_users("mention", pid, comm[author_pos])
    out[("edges", "mentions")] = pa.table({"src": post_raw[mentioning], "dst": lat.raw_id(mentioned[mentioning])})
    return out


class ShardSink:
    """Re-cuts streamed rows into shards of exactly ``shard_rows`` rows (the last one shorter)."""

    def __init__(self, write, shard_rows: int, label: str = "00000"):
        self.write, self.shard_rows, self.label = write, shard_rows, label
        self.pending: dict[tuple[str, str], list[pa.Table]] = {}
        self.rows: dict[tuple[str, str], int] = {}
        self.shards: dict[tuple[str, str], int] = {}
        self.total: dict[tuple[str, str], int] = {}

    def add(self, tables: dict[tuple[str, str], pa.Table]) -> None:
        for key, table in tables.items():
            self.pending.setdefault(key, []).append(table)
            self.rows[key] = self.rows.get(key, 0) + len(table)
            self.total[key] = self.total.get(key, 0) + len(table)
            while self.rows[key] >= self.shard_rows:
                merged = pa.concat_tables(self.pending[key])
                self._emit(key, merged.slice(0, self.shard_rows))
                rest = merged.slice(self.shard_rows)
                self.pending[key], self.rows[key] = [rest], len(rest)

    def close(self) -> dict[tuple[str, str], int]:
        for key, tables in self.pending.items():
            if self.rows[key]:
                self._emit(key, pa.concat_tables(tables))
        self.pending.clear()
        return self.total

    def _emit(self, key: tuple[str, str], table: pa.Table) -> None:
        index = self.shards.get(key, 0)
        self.shards[key] = index + 1
        self.write(key[0], key[1], table.combine_chunks(), f"{self.label}-{index:05d}")


def generate_blocks(spec: SyntheticSpec, blocks: range, write, shard_rows: int, label: str = "00000",
                    progress=None) -> dict[tuple[str, str], int]:
    """Generate ``blocks`` in order into shards via ``write(folder, name, table, shard_label)``."""
    lat = Latent(spec)
    sink = ShardSink(write, shard_rows, label)
    for block in blocks:
        sink.add(generate_block(lat, block))
        if progress is not None:
            progress(1)
    return sink.close()


def preset_spec(preset: str | None, users: int | None, **overrides) -> SyntheticSpec:
    """A spec from ``--preset`` and/or ``--users`` (explicit users win)."""
    if users is None:
        if preset is None:
            raise ValueError("give --users or --preset")
        users = PRESETS[preset]
    return replace(SyntheticSpec(users=users), **{k: v for k, v in overrides.items() if v is not None})
