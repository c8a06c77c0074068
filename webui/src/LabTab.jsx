// The Lab tab: what the test costs in email, live (every 2 s, from /lab/state: the bench's
// own buckets over the sign-ups so far and fakesmtp's capture), the faults and crashes at a
// click (/lab/action), each logged with what it cost, and the run as a bench cell after it.
import { useEffect, useState } from "react";
import { useDispatch, useSelector } from "react-redux";
import Alert from "@mui/material/Alert";
import Box from "@mui/material/Box";
import Button from "@mui/material/Button";
import Container from "@mui/material/Container";
import Paper from "@mui/material/Paper";
import Table from "@mui/material/Table";
import TableBody from "@mui/material/TableBody";
import TableCell from "@mui/material/TableCell";
import TableHead from "@mui/material/TableHead";
import TableRow from "@mui/material/TableRow";
import Tooltip from "@mui/material/Tooltip";
import Typography from "@mui/material/Typography";
import { LineChart } from "locust-ui";

const POLL_MS = 2000;
const LABELS = {
  "smtp-outage": "SMTP outage",
  "smtp-flaky": "20% flaky",
  "smtp-reject": "reject 10%",
  "smtp-hang": "hang 10%",
  "smtp-drop": "drop 10%",
  "smtp-clear": "lift SMTP faults",
  "app-crash": "crash app",
  "app-deploy": "deploy app",
  "consumer-crash": "crash consumer",
  "consumer-deploy": "deploy consumer",
};
const BUCKETS = [
  ["delivered", "delivered", "the email reached the inbox"],
  ["in_flight", "in flight", "sign-ups still under way (waiting for their email)"],
  ["lost_silently", "lost silently", "told to check their email; it never came (and is not in the queue)"],
  ["still_queued", "still queued", "not arrived yet, but the queue still holds as many: a retry may deliver them"],
  ["failed_visibly", "failed visibly", "shown an error instead of 'check your email'"],
  ["refused", "refused", "the SMTP server refused the address for good (5xx)"],
  ["duplicates", "duplicated", "the same email arrived more than once"],
  ["late", "late", "delivered after a fault was lifted, though sent before"],
];

function Figure({ name, label, value, help }) {
  return (
    <Tooltip title={help || ""}>
      <Paper variant="outlined" sx={{ p: 1.5, minWidth: 120 }}>
        <Typography variant="caption" color="text.secondary">
          {label}
        </Typography>
        <Typography variant="h5" data-testid={`figure-${name}`}>
          {value === null || value === undefined ? "–" : value}
        </Typography>
      </Paper>
    </Tooltip>
  );
}

function Row({ title, children }) {
  return (
    <Box sx={{ my: 2 }}>
      <Typography variant="subtitle1" sx={{ mb: 1 }}>
        {title}
      </Typography>
      <Box sx={{ display: "flex", flexWrap: "wrap", gap: 1 }}>{children}</Box>
    </Box>
  );
}

const ms = (value) => (value === null || value === undefined ? null : `${Math.round(value)} ms`);
const clock = (epoch) => new Date(epoch * 1000).toISOString();

export default function LabTab() {
  const [state, setState] = useState(null);
  const [problem, setProblem] = useState("");
  const [busy, setBusy] = useState("");
  const isDarkMode = useSelector(({ theme }) => theme.isDarkMode);
  const swarmState = useSelector(({ swarm }) => swarm.state);
  const dispatch = useDispatch();
  const actions = (window.templateArgs && window.templateArgs.lab_actions) || [];

  async function poll() {
    try {
      const response = await fetch("./lab/state");
      setState(await response.json());
    } catch (exc) {
      setProblem(`the lab's figures could not be read: ${exc}`);
    }
  }
  useEffect(() => {
    poll();
    const timer = setInterval(poll, POLL_MS);
    return () => clearInterval(timer);
  }, []);

  async function act(name) {
    setBusy(name);
    setProblem("");
    const response = await fetch("./lab/action", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) setProblem(body.error || `HTTP ${response.status}`);
    setBusy("");
    poll();
  }

  const d = (state && state.delivery) || {};
  const a = (state && state.arrivals) || {};
  const inbox = (state && state.time_to_inbox) || {};
  const smtp = (state && state.smtp) || {};
  const processes = (state && state.processes) || {};
  const timeline = (state && state.timeline) || [];
  const since = state ? state.since : 0;
  const times = timeline.map((p) => clock(since + p.t));
  // A figure not measured yet (no email in yet) is a gap, not a zero.
  const series = (key) => timeline.map((p, i) => [times[i], p[key] ?? null]);
  const markers = ((state && state.actions) || []).map((x) => clock(x.at));
  const consumer = (processes.consumers || [])[0];

  return (
    <Container maxWidth="xl">
      {problem && <Alert severity="error">{problem}</Alert>}
      {state && state.errors && state.errors.map((e) => <Alert key={e} severity="warning">{e}</Alert>)}
      <Typography variant="h6">
        {state ? `${state.variant || "?"}: ${state.running ? "running" : "stopped"}` : "loading"}
        {state && !state.sends_email ? " (sends no email by design)" : ""}
      </Typography>
      <Row title="Sign-ups">
        <Figure name="offered" label="offered" value={a.offered} help="arrivals the schedule offered" />
        <Figure name="started" label="started" value={a.started} />
        <Figure name="dropped" label="dropped" value={a.dropped} help="could not start: too many in flight; counted, never skipped" />
      </Row>
      <Row title="Emails">
        {BUCKETS.map(([key, label, help]) => (
          <Figure key={key} name={key} label={label} help={help}
            value={key === "in_flight" ? state && state.in_flight : d[key]} />
        ))}
      </Row>
      <Row title="Time to inbox">
        <Figure name="inbox-p50" label="p50" value={ms(inbox.p50_ms)} />
        <Figure name="inbox-p95" label="p95" value={ms(inbox.p95_ms)} />
        <Figure name="inbox-p99" label="p99" value={ms(inbox.p99_ms)} />
      </Row>
      <Row title="The app and fakesmtp">
        {processes.available ? (
          <>
            <Figure name="app-state" label="app" value={processes.app && processes.app.state} />
            <Figure name="threads" label="live threads" value={processes.app && processes.app.threads} />
            <Figure name="queue-depth" label="queue depth" value={processes.queue_depth} />
            <Figure name="consumer-state" label={consumer ? consumer.name : "consumer"}
              value={consumer ? consumer.state : "none"} />
          </>
        ) : (
          <Figure name="processes" label="processes" value="–" help={processes.reason} />
        )}
        <Figure name="smtp-latency" label="SMTP latency" value={smtp.latency && smtp.latency.eom} />
        <Figure name="smtp-faults" label="SMTP faults" value={(smtp.faults || []).length ? smtp.faults.map((f) => f.id).join(", ") : "none"} />
        <Figure name="smtp-injected" label="faults injected" value={smtp.injected} />
        <Figure name="smtp-lateness" label="SMTP lateness p99" value={ms(smtp.lateness_p99_ms && smtp.lateness_p99_ms.eom)} />
      </Row>
      <Row title="Do it now">
        {actions.map((x) => (
          <Tooltip key={x.name} title={x.summary}>
            <span>
              <Button variant="contained" color={x.kind === "process" ? "error" : "warning"}
                disabled={!!busy} onClick={() => act(x.name)} data-testid={`action-${x.name}`}>
                {LABELS[x.name] || x.name}
              </Button>
            </span>
          </Tooltip>
        ))}
      </Row>
      {state && state.actions && state.actions.length > 0 && (
        <Table size="small" data-testid="action-log">
          <TableHead>
            <TableRow>
              <TableCell>time</TableCell><TableCell>action</TableCell><TableCell>what happened</TableCell>
              <TableCell>lost since</TableCell><TableCell>failed visibly since</TableCell>
            </TableRow>
          </TableHead>
          <TableBody>
            {state.actions.map((x) => (
              <TableRow key={`${x.at}-${x.name}`}>
                <TableCell>{new Date(x.at * 1000).toLocaleTimeString()}</TableCell>
                <TableCell>{x.name}</TableCell>
                <TableCell>{x.ok ? x.detail : `refused: ${x.detail}`}</TableCell>
                <TableCell>{(d.lost_silently ?? 0) - (x.counts.lost_silently ?? 0)}</TableCell>
                <TableCell>{(d.failed_visibly ?? 0) - (x.counts.failed_visibly ?? 0)}</TableCell>
              </TableRow>
            ))}
          </TableBody>
        </Table>
      )}
      {timeline.length > 1 && (
        <Box sx={{ my: 2 }}>
          <LineChart
            charts={{ time: times, markers, delivered: series("delivered"),
              missing: series("missing"), failed_visibly: series("failed_visibly") }}
            title="Emails: delivered against lost (a line per action)"
            lines={[{ name: "delivered", key: "delivered" }, { name: "lost silently", key: "missing" },
              { name: "failed visibly", key: "failed_visibly" }]}
            colors={["#009E73", "#111111", "#D55E00"]}
            isDarkMode={isDarkMode}
          />
          <LineChart
            charts={{ time: times, markers, p50: series("inbox_p50_ms"), p95: series("inbox_p95_ms") }}
            title="Time to inbox (ms)"
            lines={[{ name: "p50", key: "p50" }, { name: "p95", key: "p95" }]}
            colors={["#0072B2", "#CC79A7"]}
            isDarkMode={isDarkMode}
          />
        </Box>
      )}
      {state && !state.running && swarmState !== "ready" && (
        <Row title="This run">
          <Button variant="contained" data-testid="new-run"
            onClick={() => dispatch({ type: "swarm/setSwarm", payload: { state: "ready" } })}>
            New lab run
          </Button>
          <Button variant="outlined" href="./lab/run.zip" data-testid="download-run">
            Download as a bench cell
          </Button>
          <Button variant="outlined" href="./lab/report" target="_blank" data-testid="open-report">
            Open its report
          </Button>
        </Row>
      )}
    </Container>
  );
}
