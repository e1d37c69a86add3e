"""Cascade analysis on malformed traces: duplicate span ids must not hang the analysis."""

from __future__ import annotations

from errorgate.processors.classification.cascade import Node, Role, analyse_trace


def test_a_span_under_its_own_ids_twin_terminates() -> None:
    # Two spans share id 5: the CONSUMER one names 5 as its parent, so the PRODUCER twin (the
    # one the id resolves to) becomes its own parent in the climb towards an entry span.
    nodes = [
        Node(b"\x05", b"\x05", "a", 5, "s1", True, 2, "db", 1),
        Node(b"\x06", b"\x05", "b", 0, "s2", True, 2, "", 1),
        Node(b"\x02", b"", "a", 3, "s2", True, 1, "db", 1),
        Node(b"\x04", b"", "a", 5, "s2", False, 1, "", 0),
        Node(b"\x05", b"", "a", 4, "s2", True, 0, "db", 1),
        Node(b"\x01", b"\x02", "a", 5, "s3", True, 0, "", 0),
    ]
    analysis = analyse_trace(nodes)  # returned at all: before, this looped forever
    assert analysis.roles[b"\x05"] == Role("same_service", "s2", b"\x06")


def test_client_span_without_server_child_is_the_origin_for_its_callee() -> None:
    nodes = [
        Node(b"\x01", b"", "GET /", 2, "shop", True, 10),  # SERVER
        Node(b"\x02", b"\x01", "work", 1, "shop", True, 9),  # INTERNAL
        Node(b"\x03", b"\x02", "query", 3, "shop", True, 8, "db"),  # CLIENT, no server child
        Node(b"\x04", b"\x01", "retry", 1, "shop", False, 7),
    ]
    analysis = analyse_trace(nodes)
    assert analysis.roles[b"\x03"] == Role("origin", "db", b"\x03")
    assert analysis.roles[b"\x01"] == Role("propagated", "db", b"\x03")
    assert analysis.services == {"shop", "db"}
    assert analysis.origin_services == {"db"}


def test_origin_moves_up_to_the_failing_entry_span_of_its_service() -> None:
    nodes = [
        Node(b"\x01", b"", "GET /", 2, "frontend", True, 10),  # SERVER
        Node(b"\x02", b"\x01", "GET", 3, "frontend", True, 9, "shop"),  # CLIENT, shop's SERVER below
        Node(b"\x03", b"\x02", "GET /items", 2, "shop", True, 8),  # SERVER
        Node(b"\x04", b"\x03", "render", 1, "shop", True, 7),  # INTERNAL
        Node(b"\x05", b"\x04", "parse", 1, "shop", True, 6),  # INTERNAL: the deepest failing span
    ]
    analysis = analyse_trace(nodes)
    # shop's entry span carries the origin for the failure that started in its INTERNAL span.
    assert analysis.roles[b"\x03"] == Role("origin", "shop", b"\x03")
    assert analysis.roles[b"\x05"] == Role("same_service", "shop", b"\x03")
    assert analysis.roles[b"\x04"] == Role("same_service", "shop", b"\x03")
    assert analysis.roles[b"\x01"] == Role("propagated", "shop", b"\x03")
    assert analysis.origin_services == {"shop"}


def test_failing_client_with_a_healthy_server_child_climbs_to_its_own_entry_span() -> None:
    # The callee answered (its SERVER span is fine): the failure is the caller's, e.g. its own
    # timeout, so the origin is the caller's entry span and the callee is not blamed.
    nodes = [
        Node(b"\x01", b"", "POST /orders", 5, "checkout", True, 10),  # CONSUMER
        Node(b"\x02", b"\x01", "POST", 3, "checkout", True, 9, "payments"),  # CLIENT
        Node(b"\x03", b"\x02", "POST /charge", 2, "payments", False, 8),  # SERVER, healthy
    ]
    analysis = analyse_trace(nodes)
    assert analysis.roles[b"\x01"] == Role("origin", "checkout", b"\x01")
    assert analysis.roles[b"\x02"] == Role("same_service", "checkout", b"\x01")
    assert analysis.origin_services == {"checkout"}


def test_origin_does_not_climb_past_a_healthy_span() -> None:
    nodes = [
        Node(b"\x01", b"", "GET /", 2, "shop", True, 10),  # SERVER
        Node(b"\x02", b"\x01", "render", 1, "shop", False, 9),  # INTERNAL, healthy (caught the error)
        Node(b"\x03", b"\x02", "parse", 1, "shop", True, 8),  # INTERNAL
    ]
    analysis = analyse_trace(nodes)
    assert analysis.roles[b"\x03"] == Role("origin", "shop", b"\x03")
    assert analysis.roles[b"\x01"] == Role("same_service", "shop", b"\x03")
