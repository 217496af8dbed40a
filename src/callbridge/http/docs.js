/* callbridge API reference: renders the OpenAPI document the server serves (openapi.json) as HTML.

   Self-contained: no library, nothing fetched but openapi.json from the same server, relative to the page.
   renderDocument(doc) is a pure function (document in, HTML text out, every value escaped) so that it can be
   run outside a browser (tests/http/test_docs_page.py runs it with node when node is there); the last lines
   wire it to the page. It lists every path and method with its parameters, request body and responses, the
   webhooks, every schema with its members, and the problem types. */

"use strict";

var METHODS = ["get", "put", "post", "delete", "patch", "head", "options"];

function esc(value) {
  return String(value === undefined || value === null ? "" : value)
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

/* Markdown-ish `code` spans in descriptions become <code>; everything else is text. */
function prose(text) {
  return esc(text).replace(/`([^`]+)`/g, "<code>$1</code>").replace(/\n\n/g, "</p><p>");
}

function anchor(name) {
  return "schema-" + String(name).toLowerCase();
}

function refName(ref) {
  var parts = String(ref).split("/");
  return parts[parts.length - 1];
}

function typeOf(schema) {
  if (!schema || typeof schema !== "object") {
    return "";
  }
  if (schema.$ref) {
    var name = refName(schema.$ref);
    return "<a href=\"#" + esc(anchor(name)) + "\">" + esc(name) + "</a>";
  }
  if ("const" in schema) {
    return "<code>" + esc(JSON.stringify(schema["const"])) + "</code>";
  }
  if (schema["enum"]) {
    return schema["enum"].map(function (v) { return "<code>" + esc(JSON.stringify(v)) + "</code>"; }).join(" | ");
  }
  var combiners = [["oneOf", "one of"], ["anyOf", "any of"]];
  for (var i = 0; i < combiners.length; i++) {
    if (schema[combiners[i][0]]) {
      return combiners[i][1] + ": " + schema[combiners[i][0]].map(function (s) { return typeOf(s) || "object"; })
        .join("; ");
    }
  }
  if (schema.allOf && !schema.type) {
    return schema.allOf.map(typeOf).filter(Boolean).join(" and ");
  }
  var kind = schema.type || "";
  if (Array.isArray(kind)) {
    kind = kind.join(" or ");
  }
  if (kind === "array") {
    kind = "array of " + (typeOf(schema.items || {}) || "any");
  } else {
    kind = esc(kind);
  }
  var extras = [];
  if (schema.format) { extras.push(esc(schema.format)); }
  if (schema.pattern) { extras.push("<code>" + esc(schema.pattern) + "</code>"); }
  [["minimum", "&ge;"], ["maximum", "&le;"], ["minLength", "length &ge;"], ["maxLength", "length &le;"]]
    .forEach(function (pair) {
      if (pair[0] in schema) { extras.push(pair[1] + " " + esc(schema[pair[0]])); }
    });
  if ("default" in schema) { extras.push("default <code>" + esc(JSON.stringify(schema["default"])) + "</code>"); }
  return extras.length ? kind + " (" + extras.join(", ") + ")" : kind;
}

function table(headings, rows) {
  if (!rows.length) {
    return "";
  }
  return "<table><thead><tr>" + headings.map(function (h) { return "<th>" + esc(h) + "</th>"; }).join("") +
    "</tr></thead><tbody>" + rows.map(function (cells) {
      return "<tr>" + cells.map(function (c) { return "<td>" + c + "</td>"; }).join("") + "</tr>";
    }).join("") + "</tbody></table>";
}

function members(schema) {
  var props = (schema && schema.properties) || {};
  var required = (schema && schema.required) || [];
  return table(["member", "type", "required", "description"], Object.keys(props).map(function (name) {
    var sub = props[name] || {};
    return ["<code>" + esc(name) + "</code>", typeOf(sub), required.indexOf(name) >= 0 ? "yes" : "",
      prose(sub.description || "")];
  }));
}

function content(body) {
  return Object.keys(body || {}).map(function (media) {
    return "<code>" + esc(media) + "</code> " + typeOf((body[media] || {}).schema || {});
  }).join("; ");
}

function security(doc, op) {
  if (op["x-authentication"]) {
    return prose(op["x-authentication"]);
  }
  var requirements = op.security !== undefined ? op.security : (doc.security || []);
  var schemes = (doc.components || {}).securitySchemes || {};
  var names = [];
  requirements.forEach(function (req) { Object.keys(req).forEach(function (n) { names.push(n); }); });
  if (!names.length) {
    return "none";
  }
  return names.map(function (name) {
    var s = schemes[name] || {};
    if (s.type === "http") { return "<code>Authorization: Bearer &lt;token&gt;</code>"; }
    if (s.type === "apiKey") { return "<code>" + esc(s.name) + "</code> " + esc(s["in"]); }
    return esc(name);
  }).join(" or ");
}

function operation(doc, id, label, method, op, shared) {
  var out = ["<section class=\"op\" id=\"" + esc(id) + "\"><h3><span class=\"method\">" + esc(method.toUpperCase()) +
    "</span> <code class=\"path\">" + esc(label) + "</code></h3>"];
  if (op.summary) { out.push("<p><strong>" + prose(op.summary) + "</strong></p>"); }
  if (op.description) { out.push("<p>" + prose(op.description) + "</p>"); }
  out.push("<p>Authentication: " + security(doc, op) + "</p>");
  var parameters = (shared || []).concat(op.parameters || []);
  if (parameters.length) {
    out.push("<h4>Parameters</h4>" + table(["name", "in", "required", "type", "description"],
      parameters.map(function (p) {
        return ["<code>" + esc(p.name) + "</code>", esc(p["in"]), p.required ? "yes" : "", typeOf(p.schema || {}),
          prose(p.description || "")];
      })));
  }
  if (op.requestBody) {
    out.push("<h4>Request body (" + (op.requestBody.required ? "required" : "optional") + ")</h4><p>" +
      prose(op.requestBody.description || "") + " " + content(op.requestBody.content) + "</p>");
  }
  var responses = op.responses || {};
  out.push("<h4>Responses</h4>" + table(["status", "description", "content"], Object.keys(responses).map(
    function (status) {
      var r = responses[status] || {};
      var headers = Object.keys(r.headers || {});
      var text = prose(r.description || "") + (headers.length ? " Headers: " + headers.map(function (h) {
        return "<code>" + esc(h) + "</code>";
      }).join(", ") + "." : "");
      return ["<code>" + esc(status) + "</code>", text, content(r.content)];
    })));
  if (op["x-verbs"]) {
    var verbs = op["x-verbs"];
    out.push("<h4>Verbs (<code>api=</code>)</h4>" + table(["api", "required", "optional", "success msg", "data"],
      Object.keys(verbs).map(function (verb) {
        var v = verbs[verb];
        var msgs = Object.keys(v.messages || {}).map(function (k) { return esc(k + ": " + v.messages[k]); });
        return ["<code>" + esc(verb) + "</code>", esc((v.required || []).join(", ")),
          esc((v.optional || []).join(", ")), msgs.join(" / "), esc((v.data || []).join(", "))];
      })));
  }
  if (op["x-websocket"]) {
    var ws = op["x-websocket"];
    var items = ["url", "subprotocol", "authentication", "client_messages", "keepalive"].filter(function (k) {
      return k in ws;
    }).map(function (k) { return "<li>" + esc(k.replace("_", " ")) + ": " + prose(ws[k]) + "</li>"; });
    Object.keys(ws.close_codes || {}).forEach(function (code) {
      items.push("<li>close code " + esc(code) + ": " + prose(ws.close_codes[code]) + "</li>");
    });
    out.push("<h4>WebSocket</h4><ul>" + items.join("") + "</ul>");
  }
  out.push("</section>");
  return out.join("");
}

function renderDocument(doc) {
  var info = doc.info || {};
  var out = ["<h1>" + esc(info.title || "API") + " " + esc(info.version || "") + "</h1>"];
  if (info.description) { out.push("<p>" + prose(info.description) + "</p>"); }
  var paths = doc.paths || {};
  var toc = [];
  var body = ["<h2 id=\"endpoints\">Endpoints</h2>"];
  Object.keys(paths).forEach(function (path) {
    var item = paths[path] || {};
    METHODS.forEach(function (method) {
      if (item[method]) {
        var id = "op-" + method + "-" + path.replace(/[^A-Za-z0-9]+/g, "-");
        toc.push("<li><a href=\"#" + esc(id) + "\">" + esc(method.toUpperCase()) + " <code>" + esc(path) +
          "</code></a> " + prose(item[method].summary || "") + "</li>");
        body.push(operation(doc, id, path, method, item[method], item.parameters));
      }
    });
  });
  out.push("<nav><h2>Contents</h2><ul>" + toc.join("") + "<li><a href=\"#webhooks\">Webhooks</a></li>" +
    "<li><a href=\"#schemas\">Schemas</a></li><li><a href=\"#problem-types\">Problem types</a></li></ul></nav>");
  out = out.concat(body);
  out.push("<h2 id=\"webhooks\">Webhooks</h2>");
  var hooks = doc.webhooks || {};
  Object.keys(hooks).forEach(function (name) {
    METHODS.forEach(function (method) {
      if (hooks[name][method]) {
        out.push(operation(doc, "webhook-" + name, "webhook: " + name, method, hooks[name][method],
          hooks[name].parameters));
      }
    });
  });
  out.push("<h2 id=\"schemas\">Schemas</h2>");
  var schemas = (doc.components || {}).schemas || {};
  Object.keys(schemas).forEach(function (name) {
    var s = schemas[name] || {};
    out.push("<section class=\"schema\" id=\"" + esc(anchor(name)) + "\"><h3>" + esc(name) + "</h3>");
    if (s.description) { out.push("<p>" + prose(s.description) + "</p>"); }
    var summary = {};
    Object.keys(s).forEach(function (k) {
      if (["description", "properties", "required", "allOf", "x-event-types"].indexOf(k) < 0) { summary[k] = s[k]; }
    });
    var kind = typeOf(summary);
    if (kind && kind !== "object") { out.push("<p>Type: " + kind + "</p>"); }
    out.push(members(s));
    (s.allOf || []).forEach(function (part) {
      if (part.$ref) {
        out.push("<p>Every member of " + typeOf(part) + ", and:</p>");
      } else if (part["if"]) {
        var when = (part["if"].properties) || {};
        var then = ((part.then || {}).properties) || {};
        var cond = Object.keys(when).map(function (k) {
          return "<code>" + esc(k) + "</code> is <code>" + esc(JSON.stringify(when[k]["const"])) + "</code>";
        }).join(", ");
        Object.keys(then).forEach(function (member) {
          out.push("<p>When " + cond + ", <code>" + esc(member) + "</code>:</p>" + (members(then[member]) ||
            "<p>" + typeOf(then[member]) + "</p>"));
        });
      } else {
        out.push(members(part) || "<p>" + typeOf(part) + "</p>");
      }
    });
    var events = s["x-event-types"] || {};
    if (Object.keys(events).length) {
      out.push("<ul>" + Object.keys(events).map(function (k) {
        return "<li><code>" + esc(k) + "</code>: " + prose(events[k]) + "</li>";
      }).join("") + "</ul>");
    }
    out.push("</section>");
  });
  out.push("<h2 id=\"problem-types\">Problem types</h2>");
  var problems = doc["x-problem-types"] || {};
  out.push(table(["error", "status", "type", "title", "when"], Object.keys(problems).map(function (key) {
    var p = problems[key] || {};
    return ["<code>" + esc(key) + "</code>", esc(p.status), "<code>" + esc(p.type) + "</code>", esc(p.title),
      prose(p.when || "")];
  })));
  return out.join("\n");
}

if (typeof module !== "undefined" && module.exports) {
  module.exports = { renderDocument: renderDocument };
} else {
  (function () {
    var root = document.getElementById("reference");
    fetch("openapi.json", { credentials: "omit" }).then(function (response) {
      if (!response.ok) { throw new Error("openapi.json answered " + response.status); }
      return response.json();
    }).then(function (doc) {
      root.innerHTML = renderDocument(doc);
      document.title = (doc.info && doc.info.title ? doc.info.title : "API") + " reference";
      if (location.hash) {
        var target = document.getElementById(location.hash.slice(1));
        if (target) { target.scrollIntoView(); }
      }
    }).catch(function (error) {
      root.textContent = "Could not load openapi.json: " + error.message;
    });
  })();
}
