// maillab's build of locust's web UI: locust's own pieces (the locust-ui package), with the
// lab's start form before a test and its Lab tab first among locust's tabs.
import { createRoot } from "react-dom/client";
import { Provider, useSelector } from "react-redux";
import CssBaseline from "@mui/material/CssBaseline";
import { ThemeProvider } from "@mui/material/styles";
import {
  Layout,
  SWARM_STATE,
  Tabs,
  baseTabs,
  locustStore,
  useCreateTheme,
  useFetchStats,
  useFetchWorkerCount,
  useLogViewer,
} from "locust-ui";

import LabTab from "./LabTab.jsx";
import StartForm from "./StartForm.jsx";

const tabs = [{ title: "Lab", key: "lab", component: LabTab }, ...baseTabs];

function Dashboard() {
  useFetchStats();
  useFetchWorkerCount();
  useLogViewer();
  const state = useSelector(({ swarm }) => swarm.state);
  const theme = useCreateTheme();
  return (
    <ThemeProvider theme={theme}>
      <CssBaseline />
      <Layout>{state === SWARM_STATE.READY ? <StartForm /> : <Tabs tabs={tabs} />}</Layout>
    </ThemeProvider>
  );
}

createRoot(document.getElementById("root")).render(
  <Provider store={locustStore}>
    <Dashboard />
  </Provider>,
);
