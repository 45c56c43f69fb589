from server.cache import TtlCache


def test_entries_expire_and_are_bounded() -> None:
    now = [0.0]
    cache: TtlCache[int] = TtlCache(1.0, max_entries=2, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)  # the oldest entry makes room
    assert cache.get("a") is None and cache.get("b") == 2 and cache.get("c") == 3
    now[0] = 1.5
    assert cache.get("b") is None
    cache.put("d", 4)
    cache.discard("d")
    assert cache.get("d") is None
