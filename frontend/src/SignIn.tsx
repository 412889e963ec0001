import { Alert, Button, Container, Paper, PasswordInput, Stack, Tabs, Text, Textarea, TextInput, Title } from "@mantine/core";
import { useState, type FormEvent } from "react";
import { api, ApiError } from "./api";
import { startOidc, type AuthConfig } from "./auth";

interface Props {
  config: AuthConfig | null;
  reason: string | null;
  onToken(token: string): void;
}

export function SignIn({ config, reason, onToken }: Props) {
  const [token, setToken] = useState("");
  const [tenant, setTenant] = useState("default");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [totp, setTotp] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const oidc = config?.oidc.enabled ? config.oidc : null;
  const tabs = [
    ...(oidc ? ["sso"] : []),
    ...(config?.token_paste !== false ? ["token"] : []),
    ...(config?.password_login !== false ? ["password"] : []),
  ];

  async function login(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const out = await api<{ access_token: string }>("/v1/auth/login", {
        json: { tenant, username, password, ...(totp ? { totp } : {}) },
        token: "",
      });
      onToken(out.access_token);
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401
        ? "Sign-in failed: the tenant, user name, password or one-time code is wrong (or the account is locked)."
        : err instanceof ApiError ? err.words : String(err));
    } finally {
      setBusy(false);
    }
  }

  function useToken(e: FormEvent) {
    e.preventDefault();
    const t = token.trim().replace(/^Bearer\s+/i, "");
    if (!t) {
      setError("Paste a token first.");
      return;
    }
    onToken(t);
  }

  return (
    <Container size={460} py="xl" component="main">
      <Title order={1} size="h2" mb="xs">Enterprise Agent Platform</Title>
      <Text mb="md">Sign in to ask questions about your documents and systems.</Text>
      {reason && <Alert color="orange" title="Please sign in again" mb="md" role="alert" data-testid="signin-reason">{reason}</Alert>}
      {error && <Alert color="red" mb="md" role="alert">{error}</Alert>}
      <Paper withBorder p="md" radius="md">
        <Tabs defaultValue={tabs[0]} keepMounted={false}>
          <Tabs.List>
            {oidc && <Tabs.Tab value="sso">Single sign-on</Tabs.Tab>}
            {tabs.includes("token") && <Tabs.Tab value="token">Token</Tabs.Tab>}
            {tabs.includes("password") && <Tabs.Tab value="password">Password</Tabs.Tab>}
          </Tabs.List>
          {oidc && (
            <Tabs.Panel value="sso" pt="md">
              <Text size="sm" mb="md">Sign in with your organisation's identity provider.</Text>
              <Button fullWidth onClick={() => startOidc(oidc).catch((e) => setError(String(e)))}>Continue to sign-in</Button>
            </Tabs.Panel>
          )}
          <Tabs.Panel value="password" pt="md">
            <form onSubmit={login} aria-label="Sign in with password">
              <Stack gap="sm">
                <TextInput label="Tenant" value={tenant} onChange={(e) => setTenant(e.currentTarget.value)} required />
                <TextInput label="User name" autoComplete="username" value={username} onChange={(e) => setUsername(e.currentTarget.value)} required />
                <PasswordInput label="Password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.currentTarget.value)} required />
                <TextInput label="One-time code (TOTP)" description="Required for administrators" inputMode="numeric" autoComplete="one-time-code"
                  value={totp} onChange={(e) => setTotp(e.currentTarget.value.replace(/\D/g, "").slice(0, 6))} />
                <Button type="submit" loading={busy}>Sign in</Button>
              </Stack>
            </form>
          </Tabs.Panel>
          <Tabs.Panel value="token" pt="md">
            <form onSubmit={useToken} aria-label="Sign in with a token">
              <Stack gap="sm">
                <Textarea label="Access token" description="In development, the token printed by `eap up` (or `eap token`)."
                  autosize minRows={3} value={token} onChange={(e) => setToken(e.currentTarget.value)} data-testid="token-input" />
                <Button type="submit">Use token</Button>
              </Stack>
            </form>
          </Tabs.Panel>
        </Tabs>
      </Paper>
    </Container>
  );
}
