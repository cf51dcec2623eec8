//! The PNG plots of BENCHMARKS.md, drawn with plotters' bitmap backend.
//!
//! Text is rasterised by ab_glyph from a TrueType file read at run time (DejaVu Sans, which
//! `cargo xtask setup` installs with fonts-dejavu-core): no fontconfig, no system library.
//! Without a font file the plots are not drawn and the report says why.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use zone_agent_lab::bench::{EndToEnd, Gate, PerPacket, Variant, median};

/// Where Debian-like systems keep a sans-serif TrueType font.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const FAMILY: &str = "sans-serif";
const ZA: RGBColor = RGBColor(0x1f, 0x5f, 0xbf);
const ZA_LIGHT: RGBColor = RGBColor(0x8f, 0xaf, 0xe0);
const XF: RGBColor = RGBColor(0xe0, 0x7b, 0x10);
const FLOOR: RGBColor = RGBColor(0x80, 0x80, 0x80);
const NFT: RGBColor = RGBColor(0x3a, 0x9a, 0x4a);

fn register() -> Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let path = FONTS.iter().find(|p| Path::new(p).is_file()).ok_or_else(|| {
            format!("no TrueType font found (looked for {}); install fonts-dejavu-core (`cargo xtask setup`)", FONTS.join(", "))
        })?;
        let bytes = std::fs::read(path).map_err(|e| format!("read {path}: {e}"))?;
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font(FAMILY, FontStyle::Normal, bytes).map_err(|_| format!("{path} is not a usable font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Draws what the results allow; returns (title, file) of each plot.
pub fn draw(
    pp: Option<&PerPacket>,
    e2e: Option<&EndToEnd>,
    dir: &Path,
) -> Result<Vec<(String, PathBuf)>> {
    register()?;
    let mut out = Vec::new();
    if let Some(pp) = pp {
        let path = dir.join("per-packet-vs-rules.png");
        per_packet(pp, &path).context("per-packet plot")?;
        out.push(("Per-packet cost vs policy size".into(), path));
    }
    if let Some(e) = e2e
        && !e.goodput.is_empty()
    {
        let path = dir.join("goodput.png");
        goodput(e, &path).context("goodput plot")?;
        out.push((
            "Goodput and connection rate through the gateway".into(),
            path,
        ));
    }
    Ok(out)
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("{e:?}")
}

/// One policy size of the per-packet plot (ns).
struct Point {
    size: f64,
    mean: Option<f64>,
    slowest: Option<f64>,
    xdp_filter: Option<f64>,
}

fn per_packet(pp: &PerPacket, path: &Path) -> Result<()> {
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let floor = median(&pp.floor_ns);
    let variants: Vec<Variant> = [Variant::Rules, Variant::Cidr]
        .into_iter()
        .filter(|v| pp.configs.iter().any(|c| c.variant == *v))
        .collect();
    if variants.is_empty() {
        bail!("no policy sizes in the results");
    }
    let panels = root.split_evenly((1, variants.len()));
    for (area, variant) in panels.iter().zip(variants) {
        let cs: Vec<_> = pp.configs.iter().filter(|c| c.variant == variant).collect();
        let pts: Vec<Point> = cs
            .iter()
            .map(|c| {
                let (mean, slowest, xdp_filter) = super::report::summary(pp, c);
                Point {
                    size: c.size as f64,
                    mean,
                    slowest,
                    xdp_filter,
                }
            })
            .collect();
        // Headroom above the lines for the legend.
        let ymax = pts
            .iter()
            .flat_map(|p| [p.mean, p.slowest, p.xdp_filter])
            .flatten()
            .chain(floor)
            .fold(1.0, f64::max)
            * 1.5;
        let (xmin, xmax) = (
            pts.first().map_or(1.0, |p| p.size),
            pts.last().map_or(10.0, |p| p.size),
        );
        let (xmin, xmax) = (xmin / 2.0, xmax * 2.0);
        let caption = match variant {
            Variant::Rules => "by rule count",
            Variant::Cidr => "by destination prefixes",
        };
        let mut chart = ChartBuilder::on(area)
            .caption(format!("ns per packet, {caption}"), (FAMILY, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d((xmin..xmax).log_scale(), 0.0..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(match variant {
                Variant::Rules => "rules",
                Variant::Cidr => "prefixes",
            })
            .y_desc("ns/packet (median)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FAMILY, 14))
            .draw()
            .map_err(err)?;
        type Get = fn(&Point) -> Option<f64>;
        let series: [(&str, RGBColor, Get); 3] = [
            ("zone-agent, corpus mean", ZA, |p| p.mean),
            ("zone-agent, slowest frame", ZA_LIGHT, |p| p.slowest),
            ("xdp-filter, corpus mean", XF, |p| p.xdp_filter),
        ];
        for (label, color, get) in series {
            let line: Vec<(f64, f64)> = pts
                .iter()
                .filter_map(|p| get(p).map(|v| (p.size, v)))
                .collect();
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    line.iter()
                        .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
                )
                .map_err(err)?;
        }
        if let Some(f) = floor {
            chart
                .draw_series(LineSeries::new(
                    vec![(xmin, f), (xmax, f)],
                    FLOOR.stroke_width(1),
                ))
                .map_err(err)?
                .label("floor: XDP_DROP")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], FLOOR.stroke_width(1))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 13))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn gate_color(g: Gate) -> RGBColor {
    match g {
        Gate::NoFilter => FLOOR,
        Gate::XdpPass => ZA_LIGHT,
        Gate::ZoneAgent => ZA,
        Gate::Nftables => NFT,
    }
}

fn goodput(e: &EndToEnd, path: &Path) -> Result<()> {
    let root = BitMapBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    type Get = fn(&zone_agent_lab::bench::Throughput) -> Vec<f64>;
    // (title, unit, decimals, values)
    let metrics: [(&str, &str, usize, Get); 2] = [
        ("TCP goodput (iperf3)", "Gbit/s", 2, |t| {
            t.goodput_bps.iter().map(|b| b / 1e9).collect()
        }),
        ("New TCP connections", "connections/s", 0, |t| {
            t.conn_per_s.clone()
        }),
    ];
    let gates: Vec<&zone_agent_lab::bench::Throughput> = e.goodput.iter().collect();
    let n = gates.len() as f64;
    for (area, (title, unit, decimals, get)) in panels.iter().zip(metrics) {
        let vals: Vec<Vec<f64>> = gates.iter().map(|t| get(t)).collect();
        let ymax = vals.iter().flatten().copied().fold(0.0, f64::max).max(1e-9) * 1.2;
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FAMILY, 20))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n, 0.0..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(gates.len() * 2 + 1)
            .x_label_formatter(&|v| {
                // Label the middle of each bar only.
                let i = v.floor() as usize;
                if (v - v.floor() - 0.5).abs() < 0.01 {
                    gates
                        .get(i)
                        .map_or(String::new(), |t| t.gate.name().to_owned())
                } else {
                    String::new()
                }
            })
            .y_desc(unit)
            .y_label_formatter(&|v| format!("{v:.decimals$}"))
            .label_style((FAMILY, 14))
            .draw()
            .map_err(err)?;
        for (i, (t, v)) in gates.iter().zip(&vals).enumerate() {
            let Some(m) = median(v) else { continue };
            let x0 = i as f64 + 0.2;
            let x1 = i as f64 + 0.8;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x1, m)],
                    gate_color(t.gate).filled(),
                )))
                .map_err(err)?;
            // The rounds' spread.
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), &s| (l.min(s), h.max(s)));
            let xm = i as f64 + 0.5;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(xm, lo), (xm, hi)],
                    BLACK.stroke_width(2),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{m:.decimals$}"),
                    (x0, m.max(hi) + ymax * 0.06),
                    (FAMILY, 14).into_font(),
                )))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws both plots from made-up results, where a font is installed (setup puts one).
    #[test]
    fn draws_both_plots() {
        if register().is_err() {
            eprintln!("no font: skipped");
            return;
        }
        let dir = std::env::temp_dir().join(format!("xtask-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (pp, e2e) = super::super::report::tests::sample();
        let files = draw(Some(&pp), Some(&e2e), &dir).unwrap();
        assert_eq!(files.len(), 2);
        for (_, f) in &files {
            let bytes = std::fs::read(f).unwrap();
            assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", f.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
