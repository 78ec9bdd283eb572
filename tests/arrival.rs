//! Density whatever the order in which sizes arrive: the kernel's own zsmalloc test
//! workload (every size, ascending, one size at a time), and orders that leave no
//! later object to fill a gap with. The dense layout must be at least as dense as
//! the kernel-exact layout at the same chain limit.

mod common;
use common::{fill, kernel_huge_class_size, kernel_selftest, trace, Order};
use zsmalloc::Layout;

/// The kernel's test workload at every chain limit and step: the dense layout
/// holds the objects in no more frames than the kernel layout, and in no larger a
/// footprint, each pool counting all of its own metadata.
#[test]
fn at_least_as_dense_as_the_kernel_layout_on_its_own_test_workload() {
    let mut losses = Vec::new();
    for chain in [4, 8, 16] {
        let huge = kernel_huge_class_size(chain);
        for step in (1..=121).step_by(8) {
            let sizes = kernel_selftest(huge, step, 182);
            let (d, k) = (fill(Layout::Dense, chain, &sizes), fill(Layout::Kernel, chain, &sizes));
            if d.utilisation < k.utilisation || d.density < k.density {
                losses.push(format!(
                    "chain {chain} step {step}: utilisation dense {:.4} kernel {:.4}, density dense {:.4} kernel {:.4}",
                    d.utilisation, k.utilisation, d.density, k.density
                ));
            }
        }
    }
    assert!(losses.is_empty(), "the dense layout is less dense in {} of 48 runs:\n{}", losses.len(), losses.join("\n"));
}

/// Ascending, descending, sawtooth and one size at a time, over the sizes of a
/// sweep (every 16 bytes up to the huge class size, 64 objects each) and of the
/// bundled traces: the dense layout's waste, all of its metadata counted, stays
/// within the kernel layout's frames and handle objects.
#[test]
fn adversarial_orders_waste_no_more_than_the_kernel_layout() {
    let traces = [trace("node-heap-lz4.txt"), trace("sqlite-heap-lz4.txt")];
    let mut losses = Vec::new();
    for chain in [4, 8, 16] {
        let sweep = kernel_selftest(kernel_huge_class_size(chain), 16, 64);
        for (name, sizes) in [("sweep", &sweep), ("node", &traces[0]), ("sqlite", &traces[1])] {
            for order in Order::ALL {
                let sizes = order.arrange(sizes);
                let (d, k) = (fill(Layout::Dense, chain, &sizes), fill(Layout::Kernel, chain, &sizes));
                if d.density < k.kernel_count {
                    losses.push(format!(
                        "{name} {} chain {chain}: dense {:.4}, kernel {:.4}",
                        order.name(),
                        d.density,
                        k.kernel_count
                    ));
                }
            }
        }
    }
    assert!(losses.is_empty(), "the dense layout wastes more in:\n{}", losses.join("\n"));
}

/// The orders are rearrangements: the same sizes, and each order's shape.
#[test]
fn orders_rearrange_the_same_sizes() {
    let sizes = kernel_selftest(100, 16, 3);
    assert_eq!(sizes, [32, 32, 32, 48, 48, 48, 64, 64, 64, 80, 80, 80, 96, 96, 96]);
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    for order in Order::ALL {
        let mut a = order.arrange(&sizes);
        match order {
            Order::Ascending => assert!(a.windows(2).all(|w| w[0] <= w[1])),
            Order::Descending => assert!(a.windows(2).all(|w| w[0] >= w[1])),
            Order::Sawtooth => assert_eq!(a, [32, 48, 64, 80, 96].repeat(3)),
            Order::BySize => {
                assert!(a.chunks(3).all(|c| c.iter().all(|&s| s == c[0])), "{a:?}");
                assert_ne!(a, sorted, "the sizes are shuffled");
            }
        }
        a.sort_unstable();
        assert_eq!(a, sorted, "{} keeps every size", order.name());
    }
}
