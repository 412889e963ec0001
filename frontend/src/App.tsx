import { ActionIcon, Alert, AppShell, Badge, Button, Group, Loader, Text, Title, useComputedColorScheme, useMantineColorScheme } from "@mantine/core";
import { useCallback, useEffect, useState } from "react";
import { Admin } from "./Admin";
import { api, ApiError, atLeast, onUnauthorized, type Me } from "./api";
import { clearToken, finishOidc, loadToken, saveToken, secondsLeft, type AuthConfig } from "./auth";
import { Chat } from "./Chat";
import { Documents } from "./Documents";
import { SignIn } from "./SignIn";

type View = "chat" | "documents" | "admin";
const VIEWS: { key: View; label: string }[] = [
  { key: "chat", label: "Chat" },
  { key: "documents", label: "Documents" },
  { key: "admin", label: "Alerts & approvals" },
];

function viewOf(path: string): View {
  const v = path.replace(/^\/+/, "").split("/")[0];
  return v === "documents" || v === "admin" ? v : "chat";
}

function SchemeToggle() {
  const { setColorScheme } = useMantineColorScheme();
  const scheme = useComputedColorScheme("light");
  const next = scheme === "dark" ? "light" : "dark";
  return (
    <ActionIcon variant="default" size="lg" onClick={() => setColorScheme(next)} aria-label={`Switch to ${next} theme`} title={`Switch to ${next} theme`}>
      <svg width="18" height="18" viewBox="0 0 24 24" aria-hidden="true" fill="none" stroke="currentColor" strokeWidth="2">
        {scheme === "dark" ? <circle cx="12" cy="12" r="5" /> : <path d="M21 12.8A9 9 0 1 1 11.2 3a7 7 0 0 0 9.8 9.8z" />}
      </svg>
    </ActionIcon>
  );
}

export function App() {
  const [config, setConfig] = useState<AuthConfig | null>(null);
  const [token, setToken] = useState<string | null>(() => loadToken());
  const [me, setMe] = useState<Me | null>(null);
  const [reason, setReason] = useState<string | null>(null);
  const [view, setView] = useState<View>(() => viewOf(window.location.pathname));
  const [problem, setProblem] = useState<string | null>(null);

  const signOut = useCallback((why: string | null) => {
    clearToken();
    setToken(null);
    setMe(null);
    setReason(why);
  }, []);

  useEffect(() => {
    onUnauthorized((err: ApiError) => signOut(err.words));
  }, [signOut]);

  useEffect(() => {
    api<AuthConfig>("/v1/auth/config", { token: "" }).then(setConfig).catch(() => setConfig(null));
  }, []);

  // Back from the identity provider (authorization-code flow with PKCE).
  useEffect(() => {
    if (window.location.pathname !== "/auth/callback" || !config?.oidc.enabled) return;
    const params = new URLSearchParams(window.location.search);
    window.history.replaceState(null, "", "/");
    finishOidc(config.oidc, params).then((t) => {
      saveToken(t);
      setReason(null);
      setToken(t);
    }).catch((e) => setReason(e instanceof Error ? e.message : String(e)));
  }, [config]);

  useEffect(() => {
    if (!token) return;
    let cancelled = false;
    setProblem(null);
    api<Me>("/v1/me").then((m) => !cancelled && setMe(m)).catch((e) => {
      if (!cancelled && !(e instanceof ApiError && e.status === 401)) setProblem(e instanceof ApiError ? e.words : String(e));
    });
    // Sign out when the token runs out, with the reason, rather than failing on the next click.
    const left = secondsLeft(token);
    const timer = left !== null && left < 2_000_000
      ? window.setTimeout(() => signOut("Your session has expired. Please sign in again."), Math.max(left, 0) * 1000)
      : undefined;
    return () => {
      cancelled = true;
      if (timer) window.clearTimeout(timer);
    };
  }, [token, signOut]);

  useEffect(() => {
    const pop = () => setView(viewOf(window.location.pathname));
    window.addEventListener("popstate", pop);
    return () => window.removeEventListener("popstate", pop);
  }, []);

  function go(v: View) {
    setView(v);
    window.history.pushState(null, "", v === "chat" ? "/" : `/${v}`);
  }

  if (!token) {
    return <SignIn config={config} reason={reason} onToken={(t) => { saveToken(t); setReason(null); setToken(t); }} />;
  }
  if (!me) {
    return (
      <Group justify="center" p="xl" component="main">
        {problem ? <Alert color="red" role="alert" title="Cannot load your account">{problem}
          <Button mt="sm" variant="default" onClick={() => signOut(null)}>Sign out</Button></Alert>
          : <><Loader size="sm" aria-label="Loading" /><Text>Signing in…</Text></>}
      </Group>
    );
  }
  return (
    <AppShell header={{ height: { base: 104, md: 60 } }} padding="md">
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between" wrap="wrap" gap="xs" py={6}>
          <Group gap="md" wrap="wrap">
            <Title order={1} size="h4">Agent Platform</Title>
            <Group component="nav" aria-label="Main" gap={4}>
              {VIEWS.map((v) => (
                <Button key={v.key} variant={view === v.key ? "filled" : "subtle"} size="sm"
                  aria-current={view === v.key ? "page" : undefined} onClick={() => go(v.key)}>{v.label}</Button>
              ))}
            </Group>
          </Group>
          <Group gap="xs">
            <Text size="sm" data-testid="whoami">{me.subject}</Text>
            <Badge variant="outline" color="gray">{me.role}</Badge>
            <SchemeToggle />
            <Button variant="default" size="sm" onClick={() => signOut(null)}>Sign out</Button>
          </Group>
        </Group>
      </AppShell.Header>
      <AppShell.Main>
        {view === "chat" && <Chat me={me} />}
        {view === "documents" && <Documents me={me} />}
        {view === "admin" && <Admin me={me} canOperate={atLeast(me, "operator")} />}
      </AppShell.Main>
    </AppShell>
  );
}
