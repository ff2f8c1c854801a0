// sallyport console: the HTTP API client. The bearer token lives in sessionStorage (gone
// when the tab closes); errors come back as ApiError carrying the API's {error:{code,message}}.
"use strict";

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const Api = {
  TOKEN_KEY: "sallyport.token",
  USER_KEY: "sallyport.user",

  token() {
    return sessionStorage.getItem(Api.TOKEN_KEY);
  },

  user() {
    try {
      return JSON.parse(sessionStorage.getItem(Api.USER_KEY) || "null");
    } catch (_) {
      return null;
    }
  },

  forget() {
    sessionStorage.removeItem(Api.TOKEN_KEY);
    sessionStorage.removeItem(Api.USER_KEY);
  },

  // One request under /api/v1: JSON in, JSON out (null for 204).
  async request(method, path, body) {
    const headers = { Accept: "application/json" };
    const token = Api.token();
    if (token) headers.Authorization = "Bearer " + token;
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch("/api/v1" + path, init);
    } catch (e) {
      throw new ApiError(0, "network", "the gateway cannot be reached: " + e.message);
    }
    if (resp.status === 204) return null;
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!resp.ok) {
      const err = (data && data.error) || {};
      throw new ApiError(resp.status, err.code || "http_" + resp.status,
        err.message || resp.statusText || "request failed");
    }
    return data;
  },

  // A GET whose answer is a file: {blob, sha256 (the X-Content-SHA256 header), name}.
  async download(path) {
    const headers = {};
    const token = Api.token();
    if (token) headers.Authorization = "Bearer " + token;
    let resp;
    try {
      resp = await fetch("/api/v1" + path, { headers });
    } catch (e) {
      throw new ApiError(0, "network", "the gateway cannot be reached: " + e.message);
    }
    if (!resp.ok) {
      let err = {};
      try {
        err = (await resp.json()).error || {};
      } catch (_) {
        err = {};
      }
      throw new ApiError(resp.status, err.code || "http_" + resp.status,
        err.message || resp.statusText || "request failed");
    }
    const disposition = resp.headers.get("Content-Disposition") || "";
    const m = /filename="([^"]+)"/.exec(disposition);
    return { blob: await resp.blob(), sha256: resp.headers.get("X-Content-SHA256"), name: m ? m[1] : "download" };
  },

  get(path) {
    return Api.request("GET", path);
  },

  post(path, body) {
    return Api.request("POST", path, body);
  },

  put(path, body) {
    return Api.request("PUT", path, body);
  },

  del(path) {
    return Api.request("DELETE", path);
  },

  async login(username, password) {
    const s = await Api.post("/auth/login", { username, password });
    sessionStorage.setItem(Api.TOKEN_KEY, s.token);
    sessionStorage.setItem(Api.USER_KEY, JSON.stringify({
      username: s.username, role: s.role, facilities: s.facilities, expires_at: s.expires_at,
    }));
    return s;
  },

  async logout() {
    try {
      if (Api.token()) await Api.post("/auth/logout");
    } finally {
      Api.forget();
    }
  },
};
