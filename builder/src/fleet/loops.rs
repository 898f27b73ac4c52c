//! Loop detection: GRE tunnels that would let a broadcast circulate forever. Kept apart from the
//! other cross-host checks because it is the one with an algorithm to explain.

use super::End;
use crate::diag::Diagnostic;
use crate::model::Host;
use std::collections::{HashMap, HashSet};

/// Finds forwarding loops. A frame crosses a bridge from one tunnel to another unless both are
/// protected (split horizon), so loops are cycles in the graph whose vertices are directed link
/// traversals and whose edges are such crossings. Tarjan's algorithm finds the strongly connected
/// parts in linear time; a crossing inside one lies on a cycle.
pub(super) fn check_loops(hosts: &[Host], links: &[(End, End)], diags: &mut Vec<Diagnostic>) {
    // Arc 2i goes links[i].0 -> links[i].1, arc 2i+1 back.
    let arc_ends = |a: usize| -> (End, End) {
        let (x, y) = links[a / 2];
        if a.is_multiple_of(2) {
            (x, y)
        } else {
            (y, x)
        }
    };
    // Per bridge, the arcs leaving it: all of them, and those leaving by an unprotected port
    // (the only ones a frame that came in by a protected port may take). Keeping both lists
    // makes a full mesh, where every port is protected, cost nothing here.
    let mut leaving: HashMap<(usize, usize), (Vec<usize>, Vec<usize>)> = HashMap::new();
    for a in 0..links.len() * 2 {
        let (from, _) = arc_ends(a);
        let entry = leaving.entry((from.host, from.bridge)).or_default();
        entry.0.push(a);
        if !from.protected {
            entry.1.push(a);
        }
    }
    let next = |a: usize| -> Vec<usize> {
        let (_, at) = arc_ends(a);
        let Some((all, unprotected)) = leaving.get(&(at.host, at.bridge)) else {
            return Vec::new();
        };
        let candidates = if at.protected { unprotected } else { all };
        candidates
            .iter()
            .copied()
            .filter(|&b| b / 2 != a / 2)
            .collect()
    };
    let n = links.len() * 2;
    let (mut index, mut low, mut on_stack) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let mut comp = vec![usize::MAX; n];
    let (mut counter, mut comps, mut stack) = (0, 0, Vec::new());
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, Vec<usize>, usize)> = vec![(root, next(root), 0)];
        index[root] = counter;
        low[root] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some((v, succ, i)) = work.last_mut() {
            let v = *v;
            if *i < succ.len() {
                let w = succ[*i];
                *i += 1;
                if index[w] == usize::MAX {
                    index[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    let s = next(w);
                    work.push((w, s, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                work.pop();
                if let Some((parent, _, _)) = work.last() {
                    low[*parent] = low[*parent].min(low[v]);
                }
                if low[v] == index[v] {
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp[w] = comps;
                        if w == v {
                            break;
                        }
                    }
                    comps += 1;
                }
            }
        }
    }
    // One report per strongly connected part that holds a crossing; a loop is found once in each
    // direction, so report each set of bridges once.
    let mut reported = HashSet::new();
    let mut named = HashSet::new();
    for a in 0..n {
        for b in next(a) {
            if comp[a] != comp[b] || !reported.insert(comp[a]) {
                continue;
            }
            let cycle = cycle_through(a, b, &comp, &next);
            let bridges: Vec<(usize, usize)> = cycle
                .iter()
                .map(|&x| (arc_ends(x).0.host, arc_ends(x).0.bridge))
                .collect();
            let mut key = bridges.clone();
            key.sort_unstable();
            if !named.insert(key) {
                continue;
            }
            let names: Vec<String> = bridges
                .iter()
                .map(|&(h, br)| format!("{}/{}", hosts[h].name, hosts[h].bridges[br].name))
                .collect();
            let all_rstp = bridges.iter().all(|&(h, br)| hosts[h].bridges[br].rstp);
            let (h0, b0) = bridges[0];
            let loc = Some(hosts[h0].bridges[b0].loc.clone());
            let text = format!(
                "GRE tunnels form a loop: {} -> {}",
                names.join(" -> "),
                names[0]
            );
            diags.push(if all_rstp {
                Diagnostic::note(loc, format!("{text}; RSTP on every bridge of it breaks the loop"))
            } else {
                Diagnostic::error(loc, format!("{text}: broadcasts would circulate forever"))
                    .hint("use a [[mesh]] in fleet.toml (its tunnels are protected), remove a link, or set rstp = true on every bridge of the loop")
            });
        }
    }
}

/// A cycle of arcs starting `a -> b`, within their strongly connected part (breadth-first from
/// `b` back to `a`, so the named loop is a shortest one).
fn cycle_through(
    a: usize,
    b: usize,
    comp: &[usize],
    next: &dyn Fn(usize) -> Vec<usize>,
) -> Vec<usize> {
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([b]);
    prev.insert(b, b);
    while let Some(x) = queue.pop_front() {
        if x == a {
            break;
        }
        for y in next(x) {
            if comp[y] == comp[a] && !prev.contains_key(&y) {
                prev.insert(y, x);
                queue.push_back(y);
            }
        }
    }
    let mut path = vec![a];
    let mut x = a;
    while x != b {
        x = prev[&x];
        path.push(x);
    }
    path.reverse();
    // path runs b .. a; the cycle is a, b, ..., (back to a)
    path.rotate_right(1);
    path
}
