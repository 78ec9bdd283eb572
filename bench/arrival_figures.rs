//! Density by order of arrival: the dense layout beside the kernel-exact layout at
//! the same chain limit, on the kernel's own zsmalloc test workload (182 objects of
//! every size from 32 bytes to below the huge class size, ascending, one size at a
//! time, steps 1, 9, ..., 121) and on orders that leave no later object to fill a gap
//! with (ascending, descending, sawtooth, one size at a time) over a sweep's and the
//! bundled traces' sizes. Every figure is after the fill.
//!
//! Three counts of the same fill:
//! - utilisation: requested bytes over the frames' bytes, what the kernel's test
//!   reports from the pool's pages;
//! - density: requested bytes over the pool's whole footprint (`PoolInfo::footprint`:
//!   frames, handle table, descriptors, side table), each layout counting its own;
//! - the kernel's count: the kernel layout's frames plus an 8-byte handle object per
//!   object, its `struct page`s left out (the README's density table counts it so).
//!
//! `cargo run --release --example arrival_figures` (about 15 s); `--markdown` prints
//! the tables of `docs/density-orders.md`.

use zsmalloc::Layout;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{fill, kernel_huge_class_size, kernel_selftest, trace, Order};

fn main() {
    let md = std::env::args().any(|a| a == "--markdown");
    let row = |cells: &[String]| {
        if md {
            println!("| {} |", cells.join(" | "));
        } else {
            println!("{}", cells.iter().map(|c| format!("{c:>10}")).collect::<Vec<_>>().join(" "));
        }
    };
    let head = |cells: &[&str], right: usize| {
        row(&cells.iter().map(|c| c.to_string()).collect::<Vec<_>>());
        if md {
            let align: Vec<&str> =
                (0..cells.len()).map(|k| if k < cells.len() - right { "---" } else { "---:" }).collect();
            println!("|{}|", align.join("|"));
        }
    };

    head(
        &[
            "chain",
            "step",
            "objects",
            "utilisation kernel",
            "utilisation dense",
            "density kernel",
            "density dense",
            "kernel's count",
        ],
        6,
    );
    let (mut behind_util, mut behind_density, mut behind_count) = (0, 0, 0);
    for chain in [4, 8, 16] {
        let huge = kernel_huge_class_size(chain);
        for step in (1..=121).step_by(8) {
            let sizes = kernel_selftest(huge, step, 182);
            let (k, d) = (fill(Layout::Kernel, chain, &sizes), fill(Layout::Dense, chain, &sizes));
            behind_util += usize::from(d.utilisation < k.utilisation);
            behind_density += usize::from(d.density < k.density);
            behind_count += usize::from(d.density < k.kernel_count);
            row(&[
                chain.to_string(),
                step.to_string(),
                sizes.len().to_string(),
                format!("{:.4}", k.utilisation),
                format!("{:.4}", d.utilisation),
                format!("{:.4}", k.density),
                format!("{:.4}", d.density),
                format!("{:.4}", k.kernel_count),
            ]);
        }
    }
    println!();
    println!(
        "Dense behind in {behind_util} of 48 runs by utilisation, {behind_density} by density, \
         {behind_count} by density against the kernel's count."
    );
    println!();

    head(
        &[
            "sizes",
            "order",
            "chain",
            "kernel's count",
            "density dense",
            "waste kernel (B/object)",
            "waste dense (B/object)",
            "dense / kernel waste",
        ],
        5,
    );
    let traces = [("node", trace("node-heap-lz4.txt")), ("sqlite", trace("sqlite-heap-lz4.txt"))];
    for chain in [4, 8, 16] {
        let sweep = kernel_selftest(kernel_huge_class_size(chain), 16, 64);
        for (name, sizes) in [("sweep", &sweep), (traces[0].0, &traces[0].1), (traces[1].0, &traces[1].1)] {
            for order in Order::ALL {
                let sizes = order.arrange(sizes);
                let (k, d) = (fill(Layout::Kernel, chain, &sizes), fill(Layout::Dense, chain, &sizes));
                row(&[
                    name.to_string(),
                    order.name().to_string(),
                    chain.to_string(),
                    format!("{:.4}", k.kernel_count),
                    format!("{:.4}", d.density),
                    format!("{:.1}", k.waste),
                    format!("{:.1}", d.waste),
                    format!("{:.2}", d.waste / k.waste),
                ]);
            }
        }
    }
}
