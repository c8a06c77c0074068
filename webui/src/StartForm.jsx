// The lab's start form: the variant, the load and the SMTP server first, each with one line
// saying what it means; closed loop folded away. Posted to /lab/swarm, which checks every
// field (a bad one is named) and starts the test with locust's own /swarm.
import { useState } from "react";
import { useDispatch } from "react-redux";
import Accordion from "@mui/material/Accordion";
import AccordionDetails from "@mui/material/AccordionDetails";
import AccordionSummary from "@mui/material/AccordionSummary";
import Alert from "@mui/material/Alert";
import Box from "@mui/material/Box";
import Button from "@mui/material/Button";
import Container from "@mui/material/Container";
import MenuItem from "@mui/material/MenuItem";
import TextField from "@mui/material/TextField";
import Typography from "@mui/material/Typography";

const args = window.templateArgs || {};
const variants = args.lab_variants || [];
const scenarios = args.lab_scenarios || [];

export default function StartForm() {
  const dispatch = useDispatch();
  const [values, setValues] = useState({
    variant: args.lab_defaults?.variant || "threaded",
    arrival_rate: String(args.lab_defaults?.arrival_rate ?? 10),
    arrivals: "constant",
    smtp_latency: args.lab_defaults?.smtp_latency || "0ms",
    scenario: "clean",
    run_time: "",
    users: "0",
  });
  const [error, setError] = useState("");
  const set = (name) => (event) => setValues({ ...values, [name]: event.target.value });
  const variant = variants.find((v) => v.name === values.variant);
  const scenario = scenarios.find((s) => s.name === values.scenario);

  async function start(event) {
    event.preventDefault();
    setError("");
    const response = await fetch("./lab/swarm", {
      method: "POST",
      body: new URLSearchParams(values),
    });
    const body = await response.json().catch(() => ({ message: `HTTP ${response.status}` }));
    if (!response.ok || !body.success) {
      setError(body.message || body.error || `HTTP ${response.status}`);
      return;
    }
    dispatch({
      type: "swarm/setSwarm",
      payload: { state: SWARM_RUNNING, host: body.host, userCount: body.user_count },
    });
  }

  return (
    <Container maxWidth="md" sx={{ my: 2 }}>
      <Typography component="h2" variant="h6">
        Start a lab run
      </Typography>
      <Box
        component="form"
        onSubmit={start}
        sx={{ display: "flex", flexDirection: "column", rowGap: 3, my: 2 }}
      >
        <TextField
          select
          label="Variant"
          name="variant"
          value={values.variant}
          onChange={set("variant")}
          helperText={variant ? variant.summary : "how the app sends its verification email"}
        >
          {variants.map((v) => (
            <MenuItem key={v.name} value={v.name}>
              {v.name}
            </MenuItem>
          ))}
        </TextField>
        <TextField
          label="Sign-ups per second"
          name="arrival_rate"
          value={values.arrival_rate}
          onChange={set("arrival_rate")}
          helperText="People arrive on a schedule whatever the app's speed (open loop, as k6 and wrk2 do); each signs up, waits for the email and clicks its link."
        />
        <TextField
          select
          label="Arrivals"
          name="arrivals"
          value={values.arrivals}
          onChange={set("arrivals")}
          helperText="constant: evenly spaced; poisson: random gaps of the same mean, as real traffic comes."
        >
          <MenuItem value="constant">constant</MenuItem>
          <MenuItem value="poisson">poisson</MenuItem>
        </TextField>
        <TextField
          label="SMTP latency"
          name="smtp_latency"
          value={values.smtp_latency}
          onChange={set("smtp_latency")}
          helperText="How long the fake SMTP server takes to accept each message: 0ms, 500ms, 5s, or lognormal:p50=200ms,p99=2s."
        />
        <TextField
          select
          label="Scenario"
          name="scenario"
          value={values.scenario}
          onChange={set("scenario")}
          helperText={scenario ? scenario.summary : ""}
        >
          {scenarios.map((s) => (
            <MenuItem key={s.name} value={s.name}>
              {s.name}
            </MenuItem>
          ))}
        </TextField>
        <Accordion>
          <AccordionSummary>
            <Typography>Run time, and closed loop instead</Typography>
          </AccordionSummary>
          <AccordionDetails sx={{ display: "flex", flexDirection: "column", rowGap: 3 }}>
            <TextField
              label="Run time"
              name="run_time"
              value={values.run_time}
              onChange={set("run_time")}
              helperText="Stop by itself after this long (20s, 3m); empty: until you press Stop."
            />
            <TextField
              label="Closed loop: users"
              name="users"
              value={values.users}
              onChange={set("users")}
              helperText="0: open loop at the rate above. N: N users sign up over and over with no pause instead, so the load is what the app lets through (the fastest variant gets the most work: not a fair comparison)."
            />
          </AccordionDetails>
        </Accordion>
        {error && <Alert severity="error">{error}</Alert>}
        <Button size="large" type="submit" variant="contained">
          Start
        </Button>
      </Box>
    </Container>
  );
}

const SWARM_RUNNING = "running";
