//! The picture of a replay report, as SVG drawn with plotters: each policy's estimates with
//! their bootstrap intervals beside the logged policy's own value, and how SNIPS settles as
//! decisions accumulate.

use crate::evaluate::Report;
use crate::ope::Estimator;
use plotters::prelude::*;

const COLOURS: [RGBColor; 6] = [
    RGBColor(0x2e, 0x86, 0xab),
    RGBColor(0xe4, 0x57, 0x2e),
    RGBColor(0x76, 0xb0, 0x41),
    RGBColor(0x88, 0x88, 0x88),
    RGBColor(0xff, 0xc9, 0x14),
    RGBColor(0x17, 0xbe, 0xbb),
];

/// The SVG text of the report's plot.
pub fn svg(report: &Report) -> Result<String, Box<dyn std::error::Error>> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 700)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(350);
        estimates(&top, report)?;
        cumulative(&bottom, report)?;
        root.present()?;
    }
    Ok(out)
}

/// Every (policy, estimator) as a point with its interval, and the logged value as a line.
fn estimates<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    report: &Report,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let points: Vec<(usize, usize, f64, f64, f64)> = report
        .policies
        .iter()
        .enumerate()
        .flat_map(|(p, policy)| {
            Estimator::ALL.iter().enumerate().filter_map(move |(e, estimator)| {
                policy
                    .estimates
                    .get(estimator.name())
                    .copied()
                    .flatten()
                    .map(|x| (p, e, x.value, x.ci_low, x.ci_high))
            })
        })
        .collect();
    let lo = points.iter().map(|p| p.3).fold(report.logged_value, f64::min);
    let hi = points.iter().map(|p| p.4).fold(report.logged_value, f64::max);
    let pad = ((hi - lo) * 0.1).max(1e-3);
    // Room on the right for the legend.
    let slots = (report.policies.len() * (Estimator::ALL.len() + 1)) as f64 + 4.0;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "oo replay: estimates and 95% intervals ({} decisions)",
                report.decisions
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..slots, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("mean reward per decision")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, report.logged_value), (slots, report.logged_value)],
            BLACK.mix(0.5),
        ))?
        .label(format!("logged policy {:.3}", report.logged_value))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.5)));
    for (e, estimator) in Estimator::ALL.iter().enumerate() {
        let colour = COLOURS[e % COLOURS.len()];
        let at = |p: usize| (p * (Estimator::ALL.len() + 1) + e) as f64 + 0.5;
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|x| x.1 == e)
                    .map(|x| ErrorBar::new_vertical(at(x.0), x.3, x.2, x.4, colour.filled(), 8)),
            )?
            .label(estimator.name())
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, colour.filled()));
    }
    for (p, policy) in report.policies.iter().enumerate() {
        let x = (p * (Estimator::ALL.len() + 1)) as f64 + 0.2;
        chart.draw_series(std::iter::once(Text::new(
            policy.policy.clone(),
            (x, lo - pad * 0.6),
            ("sans-serif", 13),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

/// SNIPS as the decisions accumulate, one line per policy.
fn cumulative<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    report: &Report,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let values = report.policies.iter().flat_map(|p| p.cumulative.iter().map(|c| c.1));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.1).max(1e-3);
    let n = report.decisions.max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption("SNIPS as the decisions accumulate", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("settled decisions")
        .y_desc("estimate")
        .draw()?;
    for (p, policy) in report.policies.iter().enumerate() {
        let colour = COLOURS[p % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                policy.cumulative.iter().map(|(i, v)| (*i as f64, *v)),
                colour.stroke_width(2),
            ))?
            .label(policy.policy.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}
