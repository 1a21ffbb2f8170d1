"""Tied channels: GroupNorm groups and grouped convs (plan.ChannelGroup.tie).

Two layer kinds need channels of one group to be kept or dropped together:

* ``GroupNorm(G, C)`` with ``G < C`` normalises each run of ``C / G``
  consecutive channels with that run's statistics. Dropping whole runs
  leaves every other run's statistics as they were, so the small model
  computes what the masked one does, with ``num_groups`` lowered to the runs
  kept. (Keeping ``G`` and dropping the same count in every run would change
  each run's statistics: not exact.)
* a grouped conv (``groups = g``, not depthwise) reads input channel ``j``
  only in conv group ``j // (C_in / g)``. Keeping the same within-group
  positions in every conv group keeps ``groups = g`` and each group's
  channels together, on both axes (torch-pruning prunes grouped convs the
  same way). Dropping whole conv groups would couple the input group with
  the output group instead, which our one-mask-per-group design cannot
  express.

`tie_channels` unites the positions each rule ties (union-find over
``(group, channel)``) and returns, per group, the unit of every channel.
A tie that reaches a fixed channel, or joins two groups, keeps the groups it
touches whole; so does a group whose units come out of unequal sizes.
"""

from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

Pos = Tuple[int, int]  # (root group id, channel in the group)
Run = Tuple[int, int, int]  # (group id or -1, start in the group, length)


class _Union:
    def __init__(self):
        self.parent: Dict[Pos, Pos] = {}

    def find(self, a: Pos) -> Pos:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def join(self, a: Pos, b: Pos) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _positions(cmap: Sequence[Run], root: Callable[[int], int]
               ) -> List[Optional[Pos]]:
    """``(root, channel)`` of every position of a map; None where fixed."""
    out: List[Optional[Pos]] = []
    for g, s, n in cmap:
        if g < 0:
            out.extend([None] * n)
        else:
            r = root(g)
            out.extend((r, s + i) for i in range(n))
    return out


def tie_rules(layer: dict) -> Iterable[Tuple[str, List[List[int]]]]:
    """``(axis, classes)`` a traced layer ties: lists of positions of its
    ``'in_map'`` / ``'out_map'`` that must be kept together."""
    kind, g = layer['kind'], int(layer['groups'])
    if kind == 'norm':
        G = int(layer.get('norm_groups', 0))
        c = sum(n for _, _, n in layer['in_map'])
        if 0 < G < c and c % G == 0:
            w = c // G
            yield 'in_map', [list(range(b * w, (b + 1) * w))
                             for b in range(G)]
        return
    if kind != 'conv' or g <= 1 or layer['depthwise']:
        return
    for axis in ('in_map', 'out_map'):
        c = sum(n for _, _, n in layer[axis])
        if c % g:
            continue
        w = c // g
        yield axis, [list(range(j, c, w)) for j in range(w)]


def tie_channels(layers: Dict[str, dict], root: Callable[[int], int],
                 is_fixed: Callable[[int], bool], sizes: Dict[int, int]
                 ) -> Tuple[Dict[int, Tuple[int, ...]], Dict[int, str]]:
    """Units of the tied groups, and the groups ties force to stay whole.

    Args:
        layers: the tracer's layer records (``in_map`` / ``out_map`` runs).
        root: group id -> its root id; is_fixed: whether a group is kept.
        sizes: root id -> channels.

    Returns:
        ``(ties, keep)``: ``ties[root]`` is the unit of each channel (only
        for groups with a non-trivial tie), ``keep[root]`` the reason a
        group must stay whole.
    """
    uf = _Union()
    keep: Dict[int, str] = {}
    for name, lay in layers.items():
        for axis, classes in tie_rules(lay):
            pos = _positions(lay[axis], root)
            for cls in classes:
                members = [pos[i] for i in cls]
                live = [p for p in members
                        if p is not None and not is_fixed(p[0])]
                if not live:
                    continue
                roots = {p[0] for p in live}
                if len(live) < len(members) or len(roots) > 1:
                    why = (f'{name} ties channels of this group to fixed '
                           'channels or to another group')
                    for r in roots:
                        keep.setdefault(r, why)
                    continue
                for p in live[1:]:
                    uf.join(live[0], p)
    ties: Dict[int, Tuple[int, ...]] = {}
    for r in sorted({p[0] for p in uf.parent}):
        if r in keep or is_fixed(r):
            continue
        unit_of: Dict[Pos, int] = {}
        tie = []
        for c in range(sizes[r]):
            head = uf.find((r, c))
            tie.append(unit_of.setdefault(head, len(unit_of)))
        counts = [0] * len(unit_of)
        for u in tie:
            counts[u] += 1
        if len(set(counts)) > 1:
            keep[r] = ('its tied channels (GroupNorm groups, grouped conv '
                       'positions) form units of unequal sizes '
                       f'{sorted(set(counts))}')
        elif len(unit_of) < sizes[r]:
            ties[r] = tuple(tie)
    return ties, keep
