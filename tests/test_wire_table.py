"""The wire codec's message table: built from each layer's explicit `WIRE_MESSAGES` and the
`wire_messages` the topology's actor classes declare; every type in it crosses the codec as
itself, and a type not in it is refused at the sender."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

import flotilla.actors
import flotilla.nodes
from flotilla.actors import ChildSpec, PoolSpec, SupervisorSpec
from flotilla.actors.core.child_spec import actor_classes
from flotilla.actors.core.messages import Message
from flotilla.actors.core.supervisor import StartChild
from flotilla.actors.demo.flaky import FlakyWorker
from flotilla.nodes.cluster.codec import BUILT_IN_MESSAGES, Codec, FrameError, Tell, declared_messages
from tests.cluster_harness import LiveCluster, make_cluster
from tests.wire_actors import Memo, Quote, QuoteDesk

LOCAL_ONLY: dict[type[Message], str] = {StartChild: "its spec holds actor classes"}
"""Message types flotilla defines that never cross between nodes, and why."""


def _example(info: mi.Type, name: str) -> Any:
    """A value of the inspected type with nothing left at its default."""
    match info:
        case mi.StructType(cls=cls, fields=fields):
            return cls(**{f.name: _example(f.type, f.name) for f in fields})
        case mi.UnionType(types=types):
            return _example(next(t for t in types if not isinstance(t, mi.NoneType)), name)
        case mi.LiteralType(values=values):
            return values[-1]
        case mi.BoolType():
            return True
        case mi.IntType():
            return 7
        case mi.FloatType():
            return 2.5
        case mi.StrType():
            return f"{name}-value"
        case mi.BytesType():
            return b"\x00\xffbytes"
        case mi.DictType(key_type=key, value_type=value):
            return {_example(key, name): _example(value, name)}
        case mi.ListType(item_type=item) | mi.VarTupleType(item_type=item):
            return [_example(item, name)]
        case mi.AnyType():
            return {"any": [1, "two", None]}
    raise AssertionError(f"no example for {info!r} (field {name}); extend _example")


def example(cls: type[Message]) -> Message:
    """An instance of `cls` with every field set."""
    value = _example(mi.type_info(cls), cls.__name__)
    assert type(value) is cls
    return value  # type: ignore[no-any-return]


def flotilla_message_types() -> set[type[Message]]:
    """Every `Message` subclass defined in a module of flotilla.actors or flotilla.nodes."""
    found: set[type[Message]] = set()
    for package in (flotilla.actors, flotilla.nodes):
        for module_info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(module_info.name)
            for value in vars(module).values():
                if (
                    isinstance(value, type)
                    and issubclass(value, Message)
                    and value is not Message
                    and value.__module__ == module.__name__
                ):
                    found.add(value)
    return found


TABLE = sorted(Codec().message_types, key=lambda cls: cls.__name__)


def test_the_table_holds_every_message_type_flotilla_defines() -> None:
    defined = flotilla_message_types()
    assert len(TABLE) >= 40 and len(defined) >= 40
    assert set(TABLE) == set(BUILT_IN_MESSAGES)
    missing = sorted(cls.__qualname__ for cls in defined - set(TABLE) - set(LOCAL_ONLY))
    assert not missing, f"message types missing from a layer's WIRE_MESSAGES: {missing}"
    assert not set(LOCAL_ONLY) & set(TABLE)


@pytest.mark.parametrize("cls", TABLE, ids=lambda cls: cls.__name__)
def test_every_wire_message_type_crosses_the_codec_as_itself(cls: type[Message]) -> None:
    codec = Codec()
    message = example(cls)
    body, typed = codec.encode_body(message)
    assert typed
    envelope = codec.decode(codec.encode(Tell("alpha/root/x", body, typed)))
    assert isinstance(envelope, Tell)
    assert (envelope.to, envelope.typed) == ("alpha/root/x", True)
    back = codec.decode_body(envelope.body, envelope.typed)
    assert type(back) is cls
    assert back == message


def test_a_message_type_nobody_declared_is_refused_at_the_sender() -> None:
    with pytest.raises(
        TypeError, match=r"cannot send Quote to another node: tests\.wire_actors\.Quote is not a declared"
    ):
        Codec().encode_body(Quote("sku-1", 100))
    with pytest.raises(TypeError, match="cannot send StartChild to another node"):
        Codec().encode_body(StartChild(spec=None))


def test_a_declared_message_type_crosses_the_codec() -> None:
    codec = Codec(messages=(Quote,))
    body, typed = codec.encode_body(Quote("sku-1", 100))
    assert typed and codec.decode_body(body, typed) == Quote("sku-1", 100)
    raw, plain = codec.encode_body([Quote("sku-2", 5)])
    assert codec.decode_body(raw, plain) == [Quote("sku-2", 5)]
    with pytest.raises(FrameError, match="bad message"):
        Codec().decode_body(body, typed)  # a node that does not know it rejects it


def test_two_types_with_one_tag_are_refused_naming_both() -> None:
    class Work(Message, frozen=True, tag=True):
        seq: int

    with pytest.raises(ValueError, match=r"test_wire_table\..*Work and flotilla\.actors\.demo\.messages\.Work share"):
        Codec(messages=(Work,))
    with pytest.raises(TypeError, match="is not a Message type"):
        Codec(messages=(msgspec.Struct,))  # type: ignore[arg-type]


def test_the_declared_types_are_collected_from_workers_and_pool_workers() -> None:
    tree = SupervisorSpec(
        "root",
        children=(
            ChildSpec("flaky", FlakyWorker),
            SupervisorSpec("inner", children=(PoolSpec("desks", ChildSpec("desk", QuoteDesk), size=2),)),
            ChildSpec("desk", QuoteDesk),
        ),
    )
    assert list(actor_classes(tree)) == [FlakyWorker, QuoteDesk, QuoteDesk]
    assert declared_messages(actor_classes(tree)) == (Quote,)


TREE = """
children:
  - {id: desk, actor: "tests.wire_actors:QuoteDesk"}
"""


def test_a_declared_type_crosses_real_nodes_and_an_undeclared_one_does_not(
    tmp_path: Path, clusters: list[LiveCluster]
) -> None:
    cluster = make_cluster(tmp_path, TREE, nodes=("alpha", "tester"))
    clusters.append(cluster)
    alpha = cluster.start_node("alpha")
    system = cluster.join()
    cluster.wait_up("alpha")
    alpha.wait_for_event("node.started")
    assert system.ask("alpha/root/desk", Quote("sku-1", 100)) == Quote("sku-1", 101)
    with pytest.raises(TypeError, match=r"tests\.wire_actors\.Memo is not a declared wire message"):
        system.ask("alpha/root/desk", Memo("hello"))
    with pytest.raises(TypeError, match="Memo is not a declared wire message"):
        system.ref("alpha/root/desk").tell(Memo("hello"))
    assert system.ask("alpha/root/desk", "plain") == "str"
