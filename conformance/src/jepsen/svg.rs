//! A run's timeline as SVG: one lane per client, each operation a bar from
//! invocation to completion coloured by outcome (green ok, grey failed,
//! orange unknown), follower reads in blue, faults as shaded bands from
//! fault to heal.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::history::{op_outcome, Fault, History, Record};

const WIDTH: f64 = 1600.0;
const LEFT: f64 = 90.0;
const LANE: f64 = 14.0;
const TOP: f64 = 52.0;

pub fn timeline(history: &History, title: &str) -> String {
    let end = history
        .records
        .iter()
        .map(|r| match r {
            Record::Op { completed, .. } | Record::FollowerRead { completed, .. } => *completed,
            Record::Fault(e) | Record::Heal(e) => e.at,
        })
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |t: u64| LEFT + (t as f64 / end) * (WIDTH - LEFT - 10.0);
    let mut lanes: BTreeMap<usize, usize> = BTreeMap::new();
    for record in &history.records {
        if let Record::Op { client, .. } | Record::FollowerRead { client, .. } = record {
            let next = lanes.len();
            lanes.entry(*client).or_insert(next);
        }
    }
    let height = TOP + LANE * lanes.len() as f64 + 40.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="18" font-size="14">{}</text>"#,
        escape(title)
    );
    // Faults first, behind the operations.
    let mut open: Vec<(Fault, Vec<usize>, u64)> = Vec::new();
    for record in &history.records {
        match record {
            Record::Fault(event) => open.push((event.fault, event.nodes.clone(), event.at)),
            Record::Heal(event) => {
                if let Some(i) = open
                    .iter()
                    .position(|(f, n, _)| *f == event.fault && *n == event.nodes)
                {
                    let (fault, nodes, at) = open.remove(i);
                    band(&mut svg, x(at), x(event.at), height, fault, &nodes);
                }
            }
            Record::Op { .. } | Record::FollowerRead { .. } => {}
        }
    }
    for (fault, nodes, at) in open {
        band(&mut svg, x(at), x(end as u64), height, fault, &nodes);
    }
    for (client, lane) in &lanes {
        let y = TOP + LANE * *lane as f64;
        let label = if *client >= 1000 {
            format!("final n{}", client - 999)
        } else if *client >= 100 {
            format!("follower n{}", client - 99)
        } else {
            format!("client {client}")
        };
        let _ = writeln!(svg, r#"<text x="4" y="{}">{label}</text>"#, y + 10.0);
    }
    for record in &history.records {
        let (client, colour, invoked, completed) = match record {
            Record::Op {
                client,
                op,
                invoked,
                completed,
                ..
            } => {
                let colour = match op_outcome(op) {
                    "ok" => "#2e9e44",
                    "failed" => "#9a9a9a",
                    _ => "#f08c00",
                };
                (client, colour, invoked, completed)
            }
            Record::FollowerRead {
                client,
                values,
                invoked,
                completed,
                ..
            } => {
                let colour = if values.is_some() {
                    "#3a6fd8"
                } else {
                    "#9a9a9a"
                };
                (client, colour, invoked, completed)
            }
            _ => continue,
        };
        let y = TOP + LANE * lanes[client] as f64;
        let (x0, x1) = (x(*invoked), x(*completed));
        let _ = writeln!(
            svg,
            r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{}" fill="{colour}"/>"#,
            y + 1.0,
            (x1 - x0).max(0.8),
            LANE - 3.0
        );
    }
    let axis = TOP + LANE * lanes.len() as f64 + 16.0;
    for tick in 0..=10 {
        let t = end * tick as f64 / 10.0;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{axis}">{:.1} s</text>"#,
            x(t as u64) - 10.0,
            t / 1e6
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"{}\">green ok · grey failed (not applied) · orange unknown · blue follower read · shaded: fault until heal</text>",
        axis + 16.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn band(svg: &mut String, x0: f64, x1: f64, height: f64, fault: Fault, nodes: &[usize]) {
    let colour = match fault {
        Fault::Kill => "#ffd6d6",
        Fault::Pause => "#d6e4ff",
        Fault::Isolate => "#fff1c2",
        Fault::CutOff => "#e6d6ff",
    };
    // Bands may overlap (a cut-off of the follower cluster during a leader
    // fault): both stay visible, and their labels do not collide.
    let (label, label_y) = match fault {
        Fault::CutOff => ("follower cluster cut off".to_string(), 47.0),
        _ => (format!("{fault:?} {nodes:?}"), 34.0),
    };
    let _ = writeln!(
        svg,
        r#"<rect x="{x0:.1}" y="24" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="0.6"/><text x="{:.1}" y="{label_y}">{label}</text>"#,
        (x1 - x0).max(1.0),
        height - 44.0,
        x0 + 2.0
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
