//! Model-based test: random sequences of malloc, write, read, map, unmap, free,
//! compaction, frame migration and misuse against a simple model (a map from handle to contents);
//! contents and the pool's invariants are checked after every step.

mod common;
use common::{check, pattern};
use proptest::prelude::*;
use zsmalloc::{AllocFlags, Config, Error, Handle, Layout, MapMode, Mapping, Pool};

#[derive(Clone, Debug)]
enum Op {
    Malloc(usize),
    Write(usize, u64),
    Read(usize),
    ReadBegin(usize),
    Map(usize, u8),
    Unmap,
    Free(usize),
    Compact,
    Defragment,
    MakeAdjacent,
    FreeStale(usize),
    Foreign,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![1usize..64, 1usize..=4096, 3000usize..=4096].prop_map(Op::Malloc),
        3 => (any::<usize>(), any::<u64>()).prop_map(|(i, s)| Op::Write(i, s)),
        2 => any::<usize>().prop_map(Op::Read),
        1 => any::<usize>().prop_map(Op::ReadBegin),
        2 => (any::<usize>(), 0u8..3).prop_map(|(i, m)| Op::Map(i, m)),
        2 => Just(Op::Unmap),
        3 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::Compact),
        1 => Just(Op::Defragment),
        1 => Just(Op::MakeAdjacent),
        1 => any::<usize>().prop_map(Op::FreeStale),
        1 => Just(Op::Foreign),
    ]
}

/// As [`op`], and allocations of up to 64 KiB besides, many of them over a page, and
/// some above 61440 bytes (at 4 KiB frames, in the dense layout, up to 17 frames).
fn op_large() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => op(),
        1 => prop_oneof![4097usize..=65536, 30000usize..=65536, 61441usize..=65536, Just(65536)].prop_map(Op::Malloc),
    ]
}

fn run(layout: Layout, ops: Vec<Op>) {
    run_with(layout, 0, ops)
}

fn run_with(layout: Layout, max_object_size: usize, ops: Vec<Op>) {
    let cfg = Config { max_pages: 1 << 14, layout, max_object_size, ..common::config() };
    let p = Pool::with_config("model", &cfg).unwrap();
    let other = Pool::with_config("other", &Config { max_pages: 16, ..common::config() }).unwrap();
    let foreign = other.malloc(10, AllocFlags::default()).unwrap();
    // The model: live handles with their size and expected contents.
    let mut live: Vec<(Handle, usize, Vec<u8>)> = Vec::new();
    let mut stale: Vec<Handle> = Vec::new();
    // (index into live, mapping). A writing mapping's bytes reach the pool at unmap
    // when the mapping is a copy (the object straddles frames that are not adjacent),
    // so an object is not read while one is open; its model contents are updated at
    // map time and checked after unmap.
    let mut maps: Vec<(usize, Mapping<'_>)> = Vec::new();
    let writing =
        |maps: &[(usize, Mapping<'_>)], i: usize| maps.iter().any(|(j, m)| *j == i && m.mode() != MapMode::ReadOnly);
    let mut misuse = 0;
    for op in ops {
        match op {
            Op::Malloc(s) => {
                let h = p.malloc(s, AllocFlags::default()).unwrap();
                p.write(h, &vec![0u8; s]).unwrap();
                live.push((h, s, vec![0u8; s]));
            }
            Op::Write(i, seed) if !live.is_empty() => {
                let i = i % live.len();
                if maps.iter().any(|(j, _)| *j == i) {
                    // A mapped object is written through its mapping, never beside it.
                    assert_eq!(p.write(live[i].0, &[1]), Err(Error::Busy));
                    continue;
                }
                let (h, s, ref mut data) = live[i];
                *data = pattern(seed, s);
                p.write(h, data).unwrap();
            }
            Op::Read(i) if !live.is_empty() => {
                let (h, s, ref data) = live[i % live.len()];
                let mut out = vec![0u8; s];
                if writing(&maps, i % live.len()) {
                    assert_eq!(p.read(h, &mut out), Err(Error::Busy), "read while mapped writable");
                    continue;
                }
                p.read(h, &mut out).unwrap();
                assert_eq!(&out, data);
            }
            Op::ReadBegin(i) if !live.is_empty() => {
                let (h, s, ref data) = live[i % live.len()];
                let mut local = vec![0u8; s];
                if writing(&maps, i % live.len()) {
                    assert_eq!(p.read_begin(h, s, &mut local).err(), Some(Error::Busy), "read while mapped writable");
                    continue;
                }
                let r = p.read_begin(h, s, &mut local).unwrap();
                assert_eq!(&*r, &data[..]);
            }
            Op::Map(i, mode) if !live.is_empty() => {
                let i = i % live.len();
                let mode = [MapMode::ReadWrite, MapMode::ReadOnly, MapMode::WriteOnly][mode as usize];
                // Read-only mappings share an object; a writable one holds it alone.
                if maps.iter().any(|(j, m)| *j == i && (m.mode() != MapMode::ReadOnly || mode != MapMode::ReadOnly)) {
                    assert_eq!(p.map(live[i].0, mode).err(), Some(Error::Busy), "a second mapping beside a writer");
                    continue;
                }
                let (h, s, ref mut data) = live[i];
                let mut m = p.map(h, mode).unwrap();
                if mode != MapMode::WriteOnly {
                    assert_eq!(&m[..s], &data[..]);
                }
                if mode != MapMode::ReadOnly {
                    // Change the contents through the mapping (stored at unmap).
                    for (k, b) in data.iter_mut().enumerate() {
                        *b = b.wrapping_add(k as u8 | 1);
                    }
                    m.as_mut_slice().unwrap()[..s].copy_from_slice(data);
                } else {
                    assert!(m.as_mut_slice().is_err(), "a read-only mapping is not writable");
                }
                maps.push((i, m));
            }
            Op::Unmap => {
                maps.pop();
            }
            Op::Free(i) if !live.is_empty() => {
                let i = i % live.len();
                let h = live[i].0;
                if maps.iter().any(|(j, _)| *j == i) {
                    assert_eq!(p.free(h), Err(Error::Busy), "mapped objects are not freed");
                    misuse += 1;
                    continue;
                }
                p.free(h).unwrap();
                // Mappings index `live`: keep them pointing at the same objects.
                let last = live.len() - 1;
                live.swap_remove(i);
                for (j, _) in maps.iter_mut() {
                    if *j == last {
                        *j = i;
                    }
                }
                stale.push(h);
            }
            Op::Compact => {
                p.compact();
            }
            Op::Defragment => {
                p.defragment();
                let c = p.census();
                assert_eq!(c.zspage + c.huge, p.total_pages());
            }
            Op::MakeAdjacent => {
                p.make_adjacent();
            }
            Op::FreeStale(i) if !stale.is_empty() => {
                let h = stale[i % stale.len()];
                assert!(matches!(p.free(h), Err(Error::Invalid(_))));
                misuse += 1;
            }
            Op::Foreign => {
                assert!(matches!(p.free(foreign), Err(Error::Invalid(_))));
                misuse += 1;
            }
            _ => {}
        }
        check(&p);
        assert_eq!(p.info().live_objects, live.len() as u64);
        assert_eq!(p.info().requested_bytes, live.iter().map(|l| l.1 as u64).sum::<u64>());
        assert_eq!(p.info().misuse_events, misuse);
    }
    drop(maps);
    for (h, s, data) in &live {
        let mut out = vec![0u8; *s];
        p.read(*h, &mut out).unwrap();
        assert_eq!(&out, data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn dense_layout_follows_the_model(ops in prop::collection::vec(op(), 1..300)) {
        run(Layout::Dense, ops);
    }

    #[test]
    fn kernel_layout_follows_the_model(ops in prop::collection::vec(op(), 1..300)) {
        run(Layout::Kernel, ops);
    }

    #[test]
    fn dense_layout_with_large_objects_follows_the_model(ops in prop::collection::vec(op_large(), 1..200)) {
        run_with(Layout::Dense, 65536, ops);
    }

    #[test]
    fn kernel_layout_with_large_objects_follows_the_model(ops in prop::collection::vec(op_large(), 1..200)) {
        run_with(Layout::Kernel, 65536, ops);
    }
}
