"""Panel and variable helpers shared by the dashboard generator.

Every panel gets a unit and queries the ``$datasource`` variable, so the committed
JSON works in any Grafana whatever its Prometheus data source is called.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
RANGE = "$__range"

# Label matchers. Pipeline metrics carry no service label, so they filter by env only;
# env is a Prometheus target label, absent series match the ".*" all-value.
ENV = 'env=~"$env"'
SVC = 'env=~"$env", service=~"$service"'

PanelBuilder = timeseries.Panel | stat.Panel | table.Panel | bargauge.Panel


def sel(metric: str, base: str = SVC, **matchers: str) -> str:
    """A series selector: ``base`` matchers plus exact ``label="value"`` ones."""
    extra = "".join(f', {k}="{v}"' for k, v in matchers.items())
    return f"{metric}{{{base}{extra}}}"


def agg(
    metric: str, by: str, base: str = SVC, *, fn: str = "rate", window: str = RATE, **matchers: str
) -> str:
    """``sum by (by) (fn(selector[window]))`` -- the shape of nearly every panel query."""
    return f"sum by ({by}) ({fn}({sel(metric, base, **matchers)}[{window}]))"


def query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant().format(pm.PromQueryFormat.TABLE)
    return q


def _targets(panel: PanelBuilder, queries: list[tuple[str, str]], instant: bool = False) -> None:
    for i, (expr, legend) in enumerate(queries):
        panel.with_target(query(expr, legend, chr(ord("A") + i), instant=instant))


def ts(
    title: str,
    unit: str,
    queries: list[tuple[str, str]],
    *,
    description: str = "",
    stacked: bool = False,
    bars: bool = False,
    width: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    """A time series panel; ``queries`` are (expr, legend) pairs."""
    p = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .fill_opacity(10)
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
    )
    if stacked:
        p = p.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    if bars:
        p = p.draw_style(cm.GraphDrawStyle.BARS).fill_opacity(80)
    _targets(p, queries)
    return p


def single_stat(
    title: str,
    unit: str,
    expr: str,
    legend: str = "",
    *,
    description: str = "",
    mappings: dict[str, tuple[str, str]] | None = None,
    thresholds: list[tuple[float | None, str]] | None = None,
    width: int = 6,
    height: int = 6,
) -> stat.Panel:
    """A stat panel; ``mappings`` maps raw values to (text, color)."""
    p = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if mappings:
        p = p.mappings(
            [
                dm.ValueMap(
                    options={
                        k: dm.ValueMappingResult(text=t, color=c, index=i)
                        for i, (k, (t, c)) in enumerate(mappings.items())
                    }
                )
            ]
        )
    if thresholds:
        p = p.thresholds(
            db.ThresholdsConfig()
            .mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(value=v, color=c) for v, c in thresholds])
        )
    _targets(p, [(expr, legend)])
    return p


def bars(
    title: str, unit: str, expr: str, legend: str, *, description: str = "", width: int = 12, height: int = 8
) -> bargauge.Panel:
    """Horizontal bars of an instant query (e.g. totals over the dashboard's time range)."""
    p = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    _targets(p, [(expr, legend)])
    return p


def top_table(
    title: str, unit: str, expr: str, *, description: str = "", width: int = 12, height: int = 8
) -> table.Panel:
    """A table of an instant query, one row per series, sorted by value."""
    p = (
        table.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .sort_by([cb.TableSortByFieldState().display_name("Value").desc(True)])
        .with_transformation(
            dm.DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}})
        )
    )
    _targets(p, [(expr, "")], instant=True)
    return p


def variables() -> list[db.DatasourceVariable | db.QueryVariable]:
    """Data source, env, team and service (team and service from errorgate_service_info)."""

    def qvar(name: str, label: str, q: str, all_value: str | None) -> db.QueryVariable:
        v = (
            db.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(q)
            .multi(True)
            .include_all(True)
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .current(dm.VariableOption(selected=True, text="All", value="$__all"))
        )
        return v.all_value(all_value) if all_value is not None else v

    return [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        # ".*" so installations without an env target label still match every series.
        qvar("env", "Environment", "label_values(errorgate_service_info, env)", ".*"),
        qvar("team", "Team", 'label_values(errorgate_service_info{env=~"$env"}, team)', None),
        # No custom all-value: "All" expands to the services of the selected teams.
        qvar(
            "service",
            "Service",
            'label_values(errorgate_service_info{env=~"$env", team=~"$team"}, service)',
            None,
        ),
    ]


def dashboard(uid: str, title: str, description: str, tags: list[str]) -> db.Dashboard:
    d = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["errorgate", *tags])
        .editable()
        .timezone("browser")
        .time("now-6h", "now")
        .refresh("1m")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .link(
            db.DashboardLink("errorgate")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(["errorgate"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for v in variables():
        d = d.with_variable(v)
    return d
