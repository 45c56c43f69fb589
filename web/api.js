// The REST API (docs/api.md): one small client, errors as ApiError with the server's code.

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

export class Api {
  constructor(token = null, base = '') {
    this.token = token;
    this.base = base;
  }

  async request(method, path, body) {
    const headers = { accept: 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new ApiError(0, 'network_error', `The server could not be reached (${error.message}).`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = data && data.error;
      if (error && error.code) throw new ApiError(response.status, error.code, error.message, error.details);
      throw new ApiError(response.status, 'http_error', `The server answered ${response.status} ${response.statusText}.`);
    }
    return data;
  }

  // -- auth ------------------------------------------------------------------------------------
  devToken(userId) {
    return this.request('POST', '/v1/dev/tokens', { user_id: userId });
  }

  // -- calls -----------------------------------------------------------------------------------
  path(type, id, rest = '') {
    return `/v1/calls/${encodeURIComponent(type)}/${encodeURIComponent(id)}${rest}`;
  }
  createCall(type, id, body) {
    return this.request('POST', this.path(type, id), body);
  }
  getCall(type, id) {
    return this.request('GET', this.path(type, id));
  }
  queryCalls(params) {
    const query = new URLSearchParams(params).toString();
    return this.request('GET', `/v1/calls?${query}`);
  }
  join(type, id, body = {}) {
    return this.request('POST', this.path(type, id, '/join'), body);
  }
  goLive(type, id) {
    return this.request('POST', this.path(type, id, '/go-live'), {});
  }
  stopLive(type, id) {
    return this.request('POST', this.path(type, id, '/stop-live'), {});
  }
  end(type, id) {
    return this.request('POST', this.path(type, id, '/end'), {});
  }
  recordings(type, id) {
    return this.request('GET', this.path(type, id, '/recordings'));
  }
}

// Viewers: everyone present who is not a host (participant_count_by_role.user when given).
export function viewerCount(session) {
  if (!session) return 0;
  const byRole = session.participant_count_by_role || {};
  if (typeof byRole.user === 'number' && Object.keys(byRole).every((r) => r === 'user' || r === 'host')) {
    return byRole.user;
  }
  return Math.max(0, (session.participant_count || 0) - (byRole.host || 0));
}

// The claims of a JWT, unverified (to show who a pasted token belongs to).
export function tokenClaims(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload.padEnd(payload.length + ((4 - (payload.length % 4)) % 4), '=')));
  } catch {
    return null;
  }
}
