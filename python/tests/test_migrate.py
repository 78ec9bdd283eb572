"""Frame census, arena defragmentation and adjacency from Python."""

import zsmalloc


def test_census_counts_frames_by_type_and_class():
    with zsmalloc.Pool("census", max_pages=1 << 14, layout="kernel") as pool:
        hs = [pool.malloc(40 + (i * 53) % 4000) for i in range(3000)]
        c = pool.census()
        assert c["zspage_frames"] + c["huge_frames"] == pool.total_pages
        assert c["top"] == c["free_frames"] + c["zspage_frames"] + c["huge_frames"] + c["transit_frames"]
        assert sum(c["class_frames"].values()) == pool.total_pages
        for index, frames in c["class_frames"].items():
            assert pool.class_info(index)["pages_used"] == frames
        huge = pool.lookup_class_index(4096)
        assert c["class_frames"][huge] == c["huge_frames"]
        for h in hs:
            pool.free(h)
        assert pool.census()["zspage_frames"] == 0


def test_defragment_shrinks_the_arena_and_keeps_contents():
    with zsmalloc.Pool("defrag", max_pages=1 << 14) as pool:
        objs = {}
        for i in range(6000):
            h = pool.malloc(500 + i % 2500)
            data = bytes([i % 251]) * (500 + i % 2500)
            pool.write(h, data)
            objs[h] = data
        for i, h in enumerate(list(objs)):
            if i % 40:
                pool.free(h)
                del objs[h]
        pool.compact()
        before = pool.census()
        shrunk = pool.defragment()
        after = pool.census()
        assert shrunk > 0
        assert after["top"] == pool.total_pages
        assert after["committed_frames"] < before["committed_frames"]
        assert after["arena_mapped_bytes"] == before["arena_mapped_bytes"]  # still reserved
        released = pool.release_arena()
        unmapped = pool.census()
        assert released == after["arena_mapped_bytes"] - unmapped["arena_mapped_bytes"] > 0
        assert unmapped["side_table_mapped_bytes"] < after["side_table_mapped_bytes"]
        assert pool.info()["frames_migrated"] > 0
        for h, data in objs.items():
            assert pool.read(h, len(data)) == data
        pool.check()


def test_make_adjacent_stops_read_copies():
    with zsmalloc.Pool("adjacent", max_pages=1 << 12, layout="kernel") as pool:
        a = pool.malloc(4096)
        pool.malloc(4096)
        pool.free(a)  # the next zspage takes frame 0, then two fresh frames
        hs = [pool.malloc(40) for _ in range(256)]
        for i, h in enumerate(hs):
            pool.write(h, bytes([i]) * 40)
        pool.read(hs[85], 40)  # straddles frames 0 and 2: copied
        copied = pool.info()["read_copied_bytes"]
        assert copied == 40
        assert pool.make_adjacent() == 1
        pool.read(hs[85], 40)
        assert pool.info()["read_copied_bytes"] == copied
        for i, h in enumerate(hs):
            assert pool.read(h, 40) == bytes([i]) * 40
        pool.check()
