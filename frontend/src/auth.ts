// Token storage, JWT claims (read, not verified: the API verifies), and the OIDC authorization-code
// flow with PKCE (RFC 7636).

const TOKEN_KEY = "eap.token";
const PKCE_KEY = "eap.pkce";

export interface Claims {
  iss?: string;
  sub?: string;
  exp?: number;
  role?: string;
  tenant?: string;
}

export function loadToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

function b64urlDecode(part: string): string {
  const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
  const bin = atob(padded);
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/** The claims of a JWT, or null when it is not one (the API still decides). */
export function claimsOf(token: string): Claims | null {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    return JSON.parse(b64urlDecode(parts[1])) as Claims;
  } catch {
    return null;
  }
}

/** The names the platform may record this user under: /v1/me's subject, and for an identity provider's token
 * the platform's `oidc:<issuer>#<subject>` (how proposals, audit records and conversations name IdP users). */
export function ownSubjects(displayed: string): Set<string> {
  const names = new Set([displayed]);
  const token = loadToken();
  const c = token ? claimsOf(token) : null;
  if (c?.iss && c.sub) names.add(`oidc:${c.iss}#${c.sub}`);
  return names;
}

/** Seconds until the token expires (negative when it has), or null without an exp claim. */
export function secondsLeft(token: string): number | null {
  const exp = claimsOf(token)?.exp;
  return typeof exp === "number" ? exp - Date.now() / 1000 : null;
}

export interface OidcConfig {
  enabled: boolean;
  authorization_endpoint: string | null;
  token_endpoint: string | null;
  client_id: string | null;
  scope: string;
}

export interface AuthConfig {
  oidc: OidcConfig;
  password_login: boolean;
  token_paste: boolean;
}

function b64url(bytes: Uint8Array): string {
  let s = "";
  bytes.forEach((b) => (s += String.fromCharCode(b)));
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(n: number): string {
  const bytes = new Uint8Array(n);
  crypto.getRandomValues(bytes);
  return b64url(bytes);
}

export function redirectUri(): string {
  return `${window.location.origin}/auth/callback`;
}

/** Leave for the identity provider with a fresh PKCE verifier and state. */
export async function startOidc(cfg: OidcConfig): Promise<void> {
  if (!cfg.authorization_endpoint || !cfg.client_id) throw new Error("single sign-on is not configured");
  const verifier = randomString(48);
  const state = randomString(16);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state }));
  const url = new URL(cfg.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: cfg.client_id,
    redirect_uri: redirectUri(),
    scope: cfg.scope,
    state,
    code_challenge: b64url(new Uint8Array(digest)),
    code_challenge_method: "S256",
  }).toString();
  window.location.assign(url.toString());
}

/** Back from the identity provider: exchange the code for a token (checks the state). */
export async function finishOidc(cfg: OidcConfig, params: URLSearchParams): Promise<string> {
  const saved = sessionStorage.getItem(PKCE_KEY);
  sessionStorage.removeItem(PKCE_KEY);
  if (params.get("error")) throw new Error(`the identity provider refused: ${params.get("error_description") || params.get("error")}`);
  if (!saved) throw new Error("this sign-in was not started here; start again");
  const { verifier, state } = JSON.parse(saved) as { verifier: string; state: string };
  if (params.get("state") !== state) throw new Error("the sign-in answer does not match the request (state); start again");
  const code = params.get("code");
  if (!code || !cfg.token_endpoint || !cfg.client_id) throw new Error("the identity provider sent no code");
  let resp: Response;
  try {
    resp = await fetch(cfg.token_endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code",
        code,
        redirect_uri: redirectUri(),
        client_id: cfg.client_id,
        code_verifier: verifier,
      }),
    });
  } catch (e) {
    throw new Error(`the identity provider's token endpoint could not be reached (${e instanceof Error ? e.message : String(e)}); ask your administrator to check the single sign-on settings`);
  }
  if (!resp.ok) {
    // RFC 6749 §5.2: {"error": "...", "error_description": "..."}; say what the IdP said.
    let said = "";
    try {
      const err = (await resp.json()) as { error?: string; error_description?: string };
      said = [err.error, err.error_description].filter(Boolean).join(": ");
    } catch {
      // not JSON: the status is all there is
    }
    throw new Error(`the identity provider did not issue a token (HTTP ${resp.status}${said ? `, ${said}` : ""}). Start the sign-in again.`);
  }
  const body = (await resp.json()) as { access_token?: string };
  if (!body.access_token) throw new Error("the identity provider's answer has no access token");
  return body.access_token;
}
