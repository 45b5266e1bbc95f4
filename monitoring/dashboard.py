#!/usr/bin/env python3
"""Writes the Grafana dashboard the chart ships (charts/strand-operator/files/dashboard.json)
from the panel list below: the one source of the dashboard. CI regenerates it and fails on a
difference (scripts/test), and monitoring/check.py checks every query against the metrics the
engines and the operator export.

    monitoring/dashboard.py            # rewrite the JSON
    monitoring/dashboard.py --check    # exit 1 if the committed JSON differs
    monitoring/dashboard.py --queries  # print every query (one JSON object per line)
    monitoring/dashboard.py --json     # print the dashboard
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "charts", "strand-operator", "files", "dashboard.json")

SEL = 'namespace=~"$namespace", family=~"$family"'
# Adds the instance's name and family to an engine series (joined on its pod; not the role,
# so that a series goes on through a switchover).
JOIN = ' * on (namespace, pod) group_left (name, family) strand_instance_info{%s}' % SEL
ONE = 'namespace=~"$namespace", family=~"$family", name=~"$instance"'
JOIN_ONE = ' * on (namespace, pod) group_left (name, family) strand_instance_info{%s}' % ONE


def engine(expr):
    """An engine series joined to its instance, restricted to the chosen family."""
    return "(%s)%s" % (expr, JOIN)


def engine_one(expr):
    return "(%s)%s" % (expr, JOIN_ONE)


def target(expr, legend="", instant=False, ref="A", fmt="time_series"):
    t = {"datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": expr, "refId": ref,
         "legendFormat": legend, "format": fmt}
    if instant:
        t["instant"] = True
        t["range"] = False
    return t


def timeseries(title, targets, unit="short", description="", stack=False):
    return {"type": "timeseries", "title": title, "description": description, "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit, "custom": {"fillOpacity": 10 if stack else 0,
                                                                 "stacking": {"mode": "normal" if stack else "none"}}},
                            "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi"}}}


def members_table():
    by_name = lambda expr: "max by (name) (%s)" % engine(expr)
    targets = [
        target("max by (name, role) (strand_instance_info{%s})" % SEL, instant=True, ref="A", fmt="table"),
        target(by_name("strand_term"), instant=True, ref="B", fmt="table"),
        target(by_name("strand_journal_seqno"), instant=True, ref="C", fmt="table"),
        target(by_name("strand_writable"), instant=True, ref="D", fmt="table"),
        target("max by (name, version) (%s)" % engine("strand_build_info"), instant=True, ref="E", fmt="table"),
        target(by_name("strand_data_format_version"), instant=True, ref="F", fmt="table"),
        target(by_name("strand_version_mismatch"), instant=True, ref="G", fmt="table"),
    ]
    return {"type": "table", "title": "Members", "targets": targets,
            "description": "Each instance of the family: role, term, journal seqno, whether it takes writes, version, data format, version-mismatch mode.",
            "transformations": [
                {"id": "merge", "options": {}},
                {"id": "organize", "options": {
                    "excludeByName": {"Time": True, "Value #A": True},
                    "renameByName": {"name": "instance", "Value #B": "term", "Value #C": "journal seqno",
                                     "Value #D": "takes writes", "version": "version",
                                     "Value #F": "data format", "Value #G": "version mismatch"}}}],
            "fieldConfig": {"defaults": {}, "overrides": []}, "options": {"showHeader": True}}


def stat(title, expr, description, thresholds):
    return {"type": "stat", "title": title, "description": description,
            "targets": [target(expr, instant=True)],
            "fieldConfig": {"defaults": {"thresholds": {"mode": "absolute", "steps": thresholds},
                                         "color": {"mode": "thresholds"}}, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background",
                        "textMode": "value_and_name"}}


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


RATE = "$__rate_interval"

OVERVIEW = [
    (members_table(), 16, 8),
    (stat("Phase", 'max by (phase) (strand_operator_family_info{%s})' % SEL,
          "The family's phase as the operator records it.",
          [{"color": "green", "value": None}]), 4, 4),
    (stat("Instances taking writes", "sum(%s)" % engine("strand_writable"),
          "How many members take application writes: 1 in a healthy family (a supplementary instance counts in its own family).",
          [{"color": "red", "value": None}, {"color": "green", "value": 1}, {"color": "red", "value": 2}]), 4, 4),
    (stat("Term", 'max(strand_operator_family_term{%s})' % SEL,
          "The family's term: it rises with every switchover and failover.",
          [{"color": "blue", "value": None}]), 4, 4),
    (stat("Links not streaming",
          'count(strand_operator_link_state{%s, state!~"Streaming|CatchingUp|Paused|AwaitingUpgrade"} == 1) or vector(0)' % SEL,
          "Links whose target receives nothing (Connecting, RollbackRequired, ReseedRequired, Blocked, Unreachable).",
          [{"color": "green", "value": None}, {"color": "red", "value": 1}]), 4, 4),
    (timeseries("Journal seqno", [target(engine("strand_journal_seqno"), "{{name}}")],
                description="Highest durable journal sequence number per instance: secondaries follow the primary."), 12, 8),
    (timeseries("Stream seqnos (SI)", [target(engine("strand_stream_seqno"), "{{name}} stream {{stream}} ({{source_family}})")],
                description="Per SI stream, the last stream seqno each supplementary instance holds."), 12, 8),
    (timeseries("Link backlog", [target('strand_operator_link_backlog_transactions{%s}' % SEL, "{{link}}")],
                description="Transactions the link's source holds that its target has not acknowledged."), 12, 8),
    (timeseries("Link lag", [target('strand_operator_link_lag_seconds{%s}' % SEL, "{{link}}")], unit="s",
                description="Age of the oldest transaction sent and not acknowledged: what a failover now could lose."), 12, 8),
    (timeseries("Commits per second", [target("sum by (name) (%s)" % engine("rate(strand_commits_total[%s])" % RATE), "{{name}}")],
                unit="ops", description="Transactions committed per second (on a secondary: applied from its source)."), 8, 8),
    (timeseries("Commit latency", [
        target("histogram_quantile(0.5, sum by (le, name) (%s))" % engine("rate(strand_commit_duration_seconds_bucket[%s])" % RATE), "p50 {{name}}", ref="A"),
        target("histogram_quantile(0.99, sum by (le, name) (%s))" % engine("rate(strand_commit_duration_seconds_bucket[%s])" % RATE), "p99 {{name}}", ref="B"),
    ], unit="s", description="From a transaction's submission to its durable commit."), 8, 8),
    (timeseries("Group commit size", [
        target("sum by (name) (%s) / sum by (name) (%s)" % (engine("rate(strand_group_commit_transactions_sum[%s])" % RATE),
                                                            engine("rate(strand_group_commit_transactions_count[%s])" % RATE)), "mean {{name}}", ref="A"),
        target("histogram_quantile(0.99, sum by (le, name) (%s))" % engine("rate(strand_group_commit_transactions_bucket[%s])" % RATE), "p99 {{name}}", ref="B"),
    ], description="Transactions sharing one fsync: the mean, and the 99th percentile (bucket-interpolated)."), 8, 8),
    (timeseries("Rollbacks and rolled-off transactions", [
        target("sum by (name) (%s)" % engine("increase(strand_rolled_back_transactions_total[5m])"), "rolled off {{name}}", ref="A"),
        target("sum by (name) (%s)" % engine("increase(strand_rollbacks_total[5m])"), "rollbacks {{name}}", ref="B"),
    ], description="Transactions rolled off into unreplicated-transaction logs (kubectl strand lost-transactions prints them)."), 8, 8),
    (timeseries("Procedures", [
        target('strand_operator_procedure_step{%s}' % SEL, "{{kind}}: {{step}}", ref="A"),
        target('strand_operator_upgrade_step{%s}' % SEL, "upgrade: {{step}}", ref="B"),
    ], description="The step a running switchover, failover or image upgrade is at (1 while at it)."), 8, 8),
    (timeseries("Disk", [
        target(engine("strand_storage_bytes"), "database {{name}}", ref="A"),
        target(engine("strand_journal_bytes"), "journal {{name}}", ref="B"),
        target(engine("strand_storage_free_bytes"), "free {{name}}", ref="C"),
    ], unit="bytes", description="Database file (data and journal), the journal's share, and free space on each data volume."), 8, 8),
]

DRILL = [
    (timeseries("Commands per second", [target("topk(10, sum by (command) (%s))" % engine_one("rate(strand_resp_commands_total[%s])" % RATE), "{{command}}")],
                unit="ops", stack=True, description="RESP commands executed, by command (top 10)."), 8, 8),
    (timeseries("Connected clients", [target(engine_one("strand_connected_clients"), "{{name}}")],
                description="Open data-port connections."), 8, 8),
    (timeseries("Fsync duration", [
        target("histogram_quantile(0.5, sum by (le) (%s))" % engine_one("rate(strand_journal_fsync_duration_seconds_bucket[%s])" % RATE), "p50", ref="A"),
        target("histogram_quantile(0.99, sum by (le) (%s))" % engine_one("rate(strand_journal_fsync_duration_seconds_bucket[%s])" % RATE), "p99", ref="B"),
    ], unit="s", description="One durable commit of a group (write and fsync)."), 8, 8),
    (timeseries("Replication throughput", [
        target("sum(%s)" % engine_one("rate(strand_replication_bytes_sent_total[%s])" % RATE), "sent", ref="A"),
        target("sum(%s)" % engine_one("rate(strand_replication_bytes_applied_total[%s])" % RATE), "applied", ref="B"),
    ], unit="Bps", description="Journal bytes sent to receivers and received and applied."), 8, 8),
    (timeseries("Apply latency", [
        target("histogram_quantile(0.99, sum by (le) (%s))" % engine_one("rate(strand_replication_apply_duration_seconds_bucket[%s])" % RATE), "p99"),
    ], unit="s", description="Applying one batch of received records durably."), 8, 8),
    (timeseries("Receiver state", [target(engine_one("strand_receiver_state") + " == 1", "{{state}}")],
                description="The receiver's state (streaming while all is well)."), 8, 8),
]


def layout(items, y):
    panels, x, h_row = [], 0, 0
    for panel, w, h in items:
        if x + w > 24:
            x, y = 0, y + h_row
            h_row = 0
        panel = dict(panel)
        panel["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        panel["datasource"] = {"type": "prometheus", "uid": "${datasource}"}
        panels.append(panel)
        x += w
        h_row = max(h_row, h)
    return panels, y + h_row


def variable(name, label, query, multi=True):
    return {"name": name, "label": label, "type": "query",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": name}, "definition": query,
            "refresh": 2, "includeAll": multi, "multi": multi, "sort": 1,
            "current": {}, "options": []}


def dashboard():
    panels = []
    y = 0
    r = row("Family overview")
    r["gridPos"] = {"x": 0, "y": y, "w": 24, "h": 1}
    panels.append(r)
    p, y = layout(OVERVIEW, y + 1)
    panels += p
    r = row("Instance: $instance")
    r["gridPos"] = {"x": 0, "y": y, "w": 24, "h": 1}
    panels.append(r)
    p, y = layout(DRILL, y + 1)
    panels += p
    for i, p in enumerate(panels):
        p["id"] = i + 1
    return {
        "title": "Strand families",
        "uid": "strand-families",
        "description": "A Strand family at a glance: members, replication, commits, rollbacks, procedures, disk; then one instance.",
        "tags": ["strand"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "options": [], "refresh": 1},
            variable("namespace", "Namespace", "label_values(strand_instance_info, namespace)"),
            variable("family", "Family", 'label_values(strand_instance_info{namespace=~"$namespace"}, family)'),
            variable("instance", "Instance", 'label_values(strand_instance_info{namespace=~"$namespace", family=~"$family"}, name)',
                     multi=False),
        ]},
        "annotations": {"list": [
            # From the counter of finished procedures: a switchover takes a fraction of a second,
            # far less than a scrape interval, so the step gauge is seldom seen at 1.
            {"name": "Switchovers, failovers and upgrades", "enable": True, "iconColor": "orange",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "expr": 'sum by (family, kind, outcome) (increase(strand_operator_procedures_total{%s}[1m])) > 0' % SEL,
             "titleFormat": "{{kind}} {{outcome}}", "textFormat": "family {{family}}", "step": "30s"},
            {"name": "Term changes", "enable": True, "iconColor": "purple",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "expr": 'changes(strand_operator_family_term{%s}[1m]) > 0' % SEL,
             "titleFormat": "term changed", "textFormat": "family {{family}}", "step": "30s"},
        ]},
        "panels": panels,
    }


def queries(d):
    """Every PromQL expression in the dashboard: panels, annotations, variables."""
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append({"where": "panel %r" % p["title"], "expr": t["expr"]})
    for a in d["annotations"]["list"]:
        out.append({"where": "annotation %r" % a["name"], "expr": a["expr"]})
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            out.append({"where": "variable %s" % v["name"], "expr": v["query"]["query"]})
    return out


def main():
    text = json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"
    if "--json" in sys.argv:
        sys.stdout.write(text)
        return 0
    if "--queries" in sys.argv:
        for q in queries(dashboard()):
            print(json.dumps(q))
        return 0
    if "--check" in sys.argv:
        with open(OUT) as f:
            if f.read() != text:
                print("dashboard.json differs from monitoring/dashboard.py: run monitoring/dashboard.py", file=sys.stderr)
                return 1
        return 0
    with open(OUT, "w") as f:
        f.write(text)
    print("wrote", os.path.relpath(OUT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
