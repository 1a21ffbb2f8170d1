"""The layer-handler registry the channel tracer consults.

Its own module so that the tracer (tracer.py) and the built-in handlers
(handlers.py) both import it and neither imports the other. A new layer
type is one small file with one `register_layer_handler` call (README,
"Teaching the tracer a layer").
"""

from typing import Any, Callable, List, Optional, Tuple, Union

from torch import nn

Handler = Callable[..., Optional[Tuple[Any, int]]]
"""``handler(ctx, name, module, args, kwargs, output) -> (channels, dim)``."""
_HANDLERS: List[Tuple[Any, Handler]] = []


def register_layer_handler(
    match: Union[type, Callable[[nn.Module], bool]], handler: Handler
) -> None:
    """Teach the tracer a layer type it does not know.

    Args:
        match: a module class (matched with ``isinstance``) or a predicate
            ``match(module) -> bool``. Later registrations win over earlier
            ones and over the built-ins.
        handler: ``handler(ctx, name, module, args, kwargs, output)`` called
            after the module ran, with ``ctx`` a `TraceContext`. It describes
            the module with ``ctx.consume`` / ``ctx.channels`` (its input
            channels), ``ctx.produce`` / ``ctx.fixed`` (its output channels)
            and ``ctx.add_layer`` (what export and the cost model must know),
            and returns ``(channels, dim)`` for its output tensor (``dim`` is
            the channel axis, e.g. 1 or -1), or None when the output has no
            channel axis to follow (it then counts as fixed width). The
            module's children are not traced separately.
    """
    if not (isinstance(match, type) or callable(match)):
        raise TypeError(
            'register_layer_handler: match must be a class or a '
            f'predicate, got {match!r}'
        )
    if not callable(handler):
        raise TypeError(
            f'register_layer_handler: handler {handler!r} is not callable'
        )
    _HANDLERS.append((match, handler))



def registered_handlers() -> List[Tuple[Any, Handler]]:
    """``(match, handler)`` pairs, latest registration first."""
    return list(reversed(_HANDLERS))


def matches(match, module: nn.Module) -> bool:
    """Whether a registration's ``match`` (class or predicate) hits."""
    if isinstance(match, type):
        return isinstance(module, match)
    return bool(match(module))


__all__ = ['Handler', 'matches', 'register_layer_handler',
           'registered_handlers']
