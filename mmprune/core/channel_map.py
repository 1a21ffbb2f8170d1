"""Channel maps: how the tracer describes a tensor's channel axis.

A channel map (`Channels`) is a tuple of segments, each a run of channels of
one group (union-find id from tracer.py, or ``FIXED``) with where it starts
inside that group and whether its pruned channels may be non-zero. These are
the plain values the tracer, the layer handlers and the op rules pass around;
they hold no state of a trace.
"""

from typing import NamedTuple, Optional, Tuple


class _Seg(NamedTuple):
    gid: int  # group id, or FIXED
    start: int  # first channel inside the group
    length: int
    # None: the pruned channels are exactly zero here (given the masks).
    # ('m', module, start): may be non-zero; masking channels [start, ...)
    #   of `module`'s output repairs it.
    # ('f', op): made non-zero by the function `op`; no mask can repair it.
    dirty: Optional[tuple] = None


Channels = Tuple[_Seg, ...]
"""Opaque description of a tensor's channel axis, passed between handlers and
`TraceContext` methods."""


class TensorInfo(NamedTuple):
    """A traced tensor's channel map and channel axis."""

    segs: Channels
    cdim: int  # non-negative index of the channel axis


def width_of(m) -> int:
    """Channel count of a channel map or of ``(gid, start, length)`` triples."""
    return sum(x[2] for x in m)


def _width_segs(segs: Channels) -> int:
    return sum(s.length for s in segs)


def as_channels(m) -> Channels:
    """``(gid, start, length)`` triples as a clean (all-zero-pruned) map."""
    return tuple(_Seg(g, s, n) for g, s, n in m)


__all__ = ['Channels', 'TensorInfo', 'as_channels', 'width_of']
