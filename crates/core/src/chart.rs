//! Line charts in SVG, for people who would rather look than read: one or more panels sharing
//! a time axis, a line per series, and vertical marks for moments (a halt, a mitigation).
//! Every chart carries a title and a description in words, so it reads without the picture
//! too (screen readers, a terminal), and draws without JavaScript or external resources.

use std::fmt::Write;

use crate::time::Timestamp;

/// One line: a name for the legend, a colour, and its points (time, value).
pub struct Series {
    pub name: String,
    pub colour: &'static str,
    pub points: Vec<(Timestamp, f64)>,
}

/// One panel: what it measures (with its unit), its lines and an optional threshold drawn as a
/// dashed line.
pub struct Panel {
    pub label: String,
    pub series: Vec<Series>,
    pub threshold: Option<f64>,
}

/// A named moment drawn across every panel.
pub struct Mark {
    pub at: Timestamp,
    pub label: String,
}

/// Colours that stay apart for the common kinds of colour blindness (Okabe and Ito).
pub const NEW: &str = "#d55e00";
pub const STABLE: &str = "#0072b2";

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The chart, panels stacked; the time axis spans every point and mark.
pub fn lines(title: &str, description: &str, panels: &[Panel], marks: &[Mark]) -> String {
    const W: f64 = 720.0;
    const PANEL_H: f64 = 170.0;
    const LEFT: f64 = 64.0;
    const RIGHT: f64 = 16.0;
    const TOP: f64 = 40.0;
    let height = TOP + panels.len() as f64 * (PANEL_H + 30.0) + 24.0;
    let times = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|(t, _)| t.millis())))
        .chain(marks.iter().map(|m| m.at.millis()));
    let (t0, t1) = times.fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)));
    let (t0, t1) = if t0 > t1 { (0, 1) } else { (t0, t1.max(t0 + 1)) };
    let x = |t: Timestamp| LEFT + (t.millis() - t0) as f64 / (t1 - t0) as f64 * (W - LEFT - RIGHT);
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {height}\" role=\"img\" aria-labelledby=\"t d\" \
         font-family=\"sans-serif\"><title id=\"t\">{}</title><desc id=\"d\">{}</desc>\
         <text x=\"{LEFT}\" y=\"20\" font-size=\"14\">{}</text>",
        esc(title),
        esc(description),
        esc(title)
    );
    for (i, p) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL_H + 30.0);
        let bottom = top + PANEL_H;
        let max =
            p.series.iter().flat_map(|s| s.points.iter().map(|(_, v)| *v)).chain(p.threshold).fold(0.0f64, f64::max);
        let max = if max <= 0.0 { 1.0 } else { max * 1.1 };
        let y = |v: f64| bottom - v / max * PANEL_H;
        let _ = write!(
            o,
            "<g><text x=\"{LEFT}\" y=\"{:.1}\" font-size=\"12\">{}</text>\
             <line x1=\"{LEFT}\" y1=\"{bottom:.1}\" x2=\"{:.1}\" y2=\"{bottom:.1}\" stroke=\"#888\"/>\
             <line x1=\"{LEFT}\" y1=\"{top:.1}\" x2=\"{LEFT}\" y2=\"{bottom:.1}\" stroke=\"#888\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>\
             <text x=\"{:.1}\" y=\"{bottom:.1}\" font-size=\"10\" text-anchor=\"end\">0</text>",
            top - 6.0,
            esc(&p.label),
            W - RIGHT,
            LEFT - 4.0,
            top + 10.0,
            number(max),
            LEFT - 4.0,
        );
        if let Some(t) = p.threshold {
            let _ = write!(
                o,
                "<line x1=\"{LEFT}\" y1=\"{v:.1}\" x2=\"{:.1}\" y2=\"{v:.1}\" stroke=\"#555\" stroke-dasharray=\"4 3\">\
                 <title>threshold {}</title></line>",
                W - RIGHT,
                number(t),
                v = y(t)
            );
        }
        for s in p.series.iter().filter(|s| !s.points.is_empty()) {
            let points: Vec<String> = s.points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
            let _ = write!(
                o,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
                s.colour,
                points.join(" "),
                esc(&s.name)
            );
        }
        o.push_str("</g>");
    }
    let bottom = TOP + panels.len() as f64 * (PANEL_H + 30.0) - 30.0;
    for m in marks {
        let mx = x(m.at);
        let _ = write!(
            o,
            "<line x1=\"{mx:.1}\" y1=\"{TOP}\" x2=\"{mx:.1}\" y2=\"{bottom:.1}\" stroke=\"#000\" stroke-dasharray=\"2 2\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
            mx + 3.0,
            TOP + 8.0,
            esc(&m.label)
        );
    }
    // The legend and the time span, under the panels.
    let mut lx = LEFT;
    let legend_y = height - 8.0;
    let mut seen = Vec::new();
    for s in panels.iter().flat_map(|p| &p.series) {
        if seen.contains(&s.name) {
            continue;
        }
        seen.push(s.name.clone());
        let _ = write!(
            o,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"4\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{legend_y:.1}\" font-size=\"11\">{}</text>",
            legend_y - 5.0,
            s.colour,
            lx + 16.0,
            esc(&s.name)
        );
        lx += 24.0 + 7.0 * s.name.len() as f64;
    }
    let _ = writeln!(
        o,
        "<text x=\"{:.1}\" y=\"{legend_y:.1}\" font-size=\"10\" text-anchor=\"end\">{} to {}</text></svg>",
        W - RIGHT,
        Timestamp(t0),
        Timestamp(t1)
    );
    o
}

/// A value for an axis: few digits, no exponent.
fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_line_per_series_with_its_marks_and_words() {
        let p = Panel {
            label: "error rate (%)".into(),
            series: vec![
                Series {
                    name: "v2 (new)".into(),
                    colour: NEW,
                    points: vec![(Timestamp(0), 1.0), (Timestamp(1000), 20.0)],
                },
                Series { name: "v1 <stable>".into(), colour: STABLE, points: vec![(Timestamp(0), 0.5)] },
            ],
            threshold: Some(5.0),
        };
        let svg = lines("t", "two lines", &[p], &[Mark { at: Timestamp(900), label: "halted".into() }]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("v1 &lt;stable&gt;"), "escaped: {svg}");
        assert!(svg.contains("halted") && svg.contains("threshold 5.0") && svg.contains("<desc id=\"d\">two lines"));
        // Nothing to draw still makes a valid picture.
        let empty = lines("t", "nothing", &[], &[]);
        assert!(empty.contains("</svg>"));
    }
}
