//! The kernel layout's class table at 4, 16 and 64 KiB frames against the kernel's
//! arithmetic at those page sizes, as `tools/kernel_density.py --table` computes it
//! (a restatement independent of the library's).

use zsmalloc::{ClassTable, Layout};

/// (index, size, frames, objects, merged into) per class, and the huge class size.
fn kernel_table(page: usize, chain: usize) -> (Vec<[usize; 5]>, usize) {
    let tool = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/kernel_density.py");
    let out = std::process::Command::new("python3")
        .args([tool, "--table", "--page", &page.to_string(), "--chain", &chain.to_string()])
        .output()
        .expect("python3 runs tools/kernel_density.py");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (mut rows, mut huge) = (Vec::new(), 0);
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f[0] == "huge_class_size" {
            huge = f[1].parse().unwrap();
        } else {
            let v: Vec<usize> = f.iter().map(|x| x.parse().unwrap()).collect();
            rows.push([v[0], v[1], v[2], v[3], v[4]]);
        }
    }
    (rows, huge)
}

#[test]
fn the_table_is_the_kernels_at_every_page_size() {
    for frame in [4096, 16384, 65536] {
        for chain in [4, 8, 16] {
            let (rows, huge) = kernel_table(frame, chain);
            let t = ClassTable::with_limit(Layout::Kernel, chain, frame, frame);
            assert_eq!(t.nr_full_classes(), rows.len(), "frame {frame}, chain {chain}");
            assert_eq!(t.huge_class_size(), huge, "frame {frame}, chain {chain}");
            for &[i, _, frames, objs, into] in &rows {
                let c = t.classes()[t.merged_of(i).unwrap()];
                assert_eq!(c.index, into, "frame {frame}, chain {chain}: class {i} merges into {into}");
                assert_eq!((c.size, c.frames, c.objs), (rows[into][1], frames, objs), "class {i}");
            }
            // Every size finds the class the kernel's lookup gives it (header added).
            let delta = frame >> 8;
            for s in (1..=frame).step_by(3).chain([frame]) {
                let idx = if s + 8 <= 32 { 0 } else { (s + 8 - 32).div_ceil(delta).min(rows.len() - 1) };
                assert_eq!(t.classes()[t.class_for(s)].index, rows[idx][4], "frame {frame}: {s} bytes");
            }
        }
    }
}
