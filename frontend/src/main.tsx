import "@mantine/core/styles.css";
import "@mantine/dropzone/styles.css";
import { Alert, createTheme, MantineProvider, type CSSVariablesResolver } from "@mantine/core";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";

// System fonts only (nothing is fetched from the internet). Colours are chosen for WCAG AA contrast (checked
// by axe-core in tests/browser): shade 9 keeps primary text on its light tint and white on primary readable,
// alert titles use the text colour, and the "dimmed" grey of descriptions is darkened in the light scheme.
const theme = createTheme({
  primaryColor: "blue",
  primaryShade: { light: 9, dark: 8 },
  autoContrast: true,
  fontFamily: "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif",
  components: {
    Alert: Alert.extend({ styles: { title: { color: "var(--mantine-color-text)" }, message: { color: "var(--mantine-color-text)" } } }),
  },
});

const resolver: CSSVariablesResolver = () => ({
  variables: {},
  light: { "--mantine-color-dimmed": "var(--mantine-color-gray-7)" },
  dark: { "--mantine-color-dimmed": "var(--mantine-color-dark-1)" },
});

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <MantineProvider theme={theme} defaultColorScheme="auto" cssVariablesResolver={resolver}>
      <App />
    </MantineProvider>
  </StrictMode>,
);
