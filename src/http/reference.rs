//! An OpenAPI document as a page for people, rendered on the server from
//! the document itself: every operation by tag, with its parameters, body
//! fields and answers. No script runs and nothing is loaded from anywhere
//! else, so the page works offline and its policy can forbid the rest.

use std::fmt::Write as _;

use serde_json::Value;

/// What a reference page may load: its own inline styles, nothing else.
pub const POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
header{background:#1d2330;color:#fff;padding:1.5rem 2rem}header a{color:#9cc3ff}\
main{max-width:70rem;margin:0 auto;padding:1rem 2rem}\
nav a{margin-right:1rem}h2{margin-top:2.5rem;border-bottom:1px solid #d0d5dd}\
.op{background:#fff;border:1px solid #d0d5dd;border-radius:6px;padding:.75rem 1rem;margin:1rem 0}\
.op h3{margin:.2rem 0;font-size:1rem}.method{display:inline-block;min-width:4.5rem;font-weight:700}\
.get{color:#1a7f37}.post{color:#0b5cad}.delete{color:#b42318}\
table{border-collapse:collapse;margin:.5rem 0}td,th{text-align:left;padding:.2rem .8rem .2rem 0;vertical-align:top}\
th{font-weight:600;color:#475467}code{background:#eef1f5;padding:0 .25rem;border-radius:3px}\
header code{background:#2e3648;color:#fff}";

/// The page for `doc`, served beside it at `document_path`.
pub fn render(doc: &Value, document_path: &str) -> String {
    let info = &doc["info"];
    let title = text(&info["title"]);
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<header>\n\
         <h1>{title}</h1>\n{}<p>The same as an \
         <a href=\"{document_path}\">OpenAPI 3.1 document</a>.</p>\n</header>\n<main>\n",
        paragraphs(&info["description"])
    );
    let tags = doc["tags"].as_array().map_or(&[][..], Vec::as_slice);
    page.push_str("<nav>");
    for tag in tags {
        let name = text(&tag["name"]);
        let _ = write!(page, "<a href=\"#{name}\">{name}</a>");
    }
    page.push_str("</nav>\n");
    for tag in tags {
        let name = tag["name"].as_str().unwrap_or_default();
        let _ = write!(
            page,
            "<h2 id=\"{0}\">{0}</h2>\n{1}",
            escape(name),
            paragraphs(&tag["description"])
        );
        for (path, method, operation) in operations(doc, name) {
            operation_html(&mut page, doc, path, method, operation);
        }
    }
    page.push_str("</main>\n</body>\n</html>\n");
    page
}

/// The operations tagged `tag`, in the document's order of paths.
fn operations<'d>(doc: &'d Value, tag: &str) -> Vec<(&'d str, &'static str, &'d Value)> {
    let paths = doc["paths"].as_object().into_iter().flatten();
    paths
        .flat_map(|(path, item)| {
            ["get", "post", "delete"]
                .into_iter()
                .filter_map(move |method| Some((path.as_str(), method, item.get(method)?)))
        })
        .filter(|(_, _, operation)| {
            operation["tags"]
                .as_array()
                .is_some_and(|tags| tags.iter().any(|t| t == tag))
        })
        .collect()
}

fn operation_html(page: &mut String, doc: &Value, path: &str, method: &str, operation: &Value) {
    let _ = write!(
        page,
        "<section class=\"op\">\n<h3><span class=\"method {method}\">{}</span> <code>{}</code></h3>\n{}{}",
        method.to_uppercase(),
        escape(path),
        paragraphs(&operation["summary"]),
        paragraphs(&operation["description"]),
    );
    if let Some(security) = operation["security"].as_array().filter(|s| !s.is_empty()) {
        let schemes: Vec<String> = security
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|requirement| {
                requirement
                    .keys()
                    .map(|k| format!("<code>{}</code>", escape(k)))
            })
            .collect();
        let _ = writeln!(page, "<p>Credentials: {}</p>", schemes.join(" or "));
    }
    if let Some(parameters) = operation["parameters"].as_array().filter(|p| !p.is_empty()) {
        page.push_str("<table><tr><th>parameter</th><th>in</th><th></th></tr>\n");
        for parameter in parameters {
            let required = if parameter["required"] == true {
                " (required)"
            } else {
                ""
            };
            let _ = writeln!(
                page,
                "<tr><td><code>{}</code>{required}</td><td>{}</td><td>{}</td></tr>",
                text(&parameter["name"]),
                text(&parameter["in"]),
                inline(&parameter["description"])
            );
        }
        page.push_str("</table>\n");
    }
    let body = &operation["requestBody"]["content"];
    if let Some((media, content)) = body.as_object().and_then(|c| c.iter().next()) {
        let _ = writeln!(page, "<p>Body: <code>{}</code></p>", escape(media));
        fields_html(page, resolve(doc, &content["schema"]));
    }
    if let Some(responses) = operation["responses"].as_object() {
        page.push_str("<table><tr><th>answer</th><th></th></tr>\n");
        for (status, response) in responses {
            let _ = writeln!(
                page,
                "<tr><td><code>{}</code></td><td>{}</td></tr>",
                escape(status),
                inline(&response["description"])
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str("</section>\n");
}

/// The fields of an object schema, one level deep.
fn fields_html(page: &mut String, schema: &Value) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    page.push_str("<table><tr><th>field</th><th>type</th><th></th></tr>\n");
    for (name, property) in properties {
        let mark = if required.contains(&name.as_str()) {
            " (required)"
        } else {
            ""
        };
        let kind = match &property["type"] {
            Value::Array(types) => types.iter().map(text).collect::<Vec<_>>().join(" or "),
            Value::Null => "".to_owned(),
            other => text(other),
        };
        let _ = writeln!(
            page,
            "<tr><td><code>{}</code>{mark}</td><td>{kind}</td><td>{}</td></tr>",
            escape(name),
            inline(&property["description"])
        );
    }
    page.push_str("</table>\n");
}

/// A schema, or the one its `$ref` names among the components.
fn resolve<'d>(doc: &'d Value, schema: &'d Value) -> &'d Value {
    match schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        Some(name) => &doc["components"]["schemas"][name],
        None => schema,
    }
}

/// A text value, escaped; nothing for anything else.
fn text(value: &Value) -> String {
    value.as_str().map(escape).unwrap_or_default()
}

/// A text value, escaped, with `code` spans.
fn inline(value: &Value) -> String {
    code_spans(&text(value))
}

/// Escaped text split into paragraphs at blank lines, with `code` spans.
fn paragraphs(value: &Value) -> String {
    let Some(raw) = value.as_str() else {
        return String::new();
    };
    raw.split("\n\n")
        .map(|paragraph| format!("<p>{}</p>\n", code_spans(&escape(paragraph.trim()))))
        .collect()
}

/// `a` between backticks as `<code>a</code>`.
fn code_spans(escaped: &str) -> String {
    let mut out = String::new();
    for (i, part) in escaped.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn operations_are_listed_by_tag_with_their_fields_and_answers_escaped() {
        let doc = json!({
            "info": { "title": "T <&>", "description": "Uses `code`.\n\nSecond." },
            "tags": [{ "name": "auth", "description": "Accounts" }],
            "paths": {
                "/a": { "post": {
                    "tags": ["auth"], "summary": "Signs <in>",
                    "security": [{ "bearer": [] }],
                    "requestBody": { "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Body" } } } },
                    "responses": {
                        "200": { "description": "OK" },
                        "401": { "description": "`invalid_token`" }
                    }
                } },
                "/b": { "get": { "tags": ["other"], "responses": {} } }
            },
            "components": { "schemas": { "Body": {
                "type": "object", "required": ["name"],
                "properties": { "name": { "type": "string", "description": "who" } }
            } } }
        });

        let page = render(&doc, "/openapi.json");

        assert!(page.contains("<title>T &lt;&amp;&gt;</title>"), "{page}");
        assert!(
            page.contains("<p>Uses <code>code</code>.</p>\n<p>Second.</p>"),
            "{page}"
        );
        assert!(page.contains("<span class=\"method post\">POST</span> <code>/a</code>"));
        assert!(page.contains("<p>Signs &lt;in&gt;</p>"));
        assert!(page.contains("Credentials: <code>bearer</code>"));
        assert!(page.contains("<td><code>name</code> (required)</td><td>string</td><td>who</td>"));
        assert!(page.contains("<td><code>200</code></td><td>OK</td>"));
        assert!(page.contains("<td><code>401</code></td><td><code>invalid_token</code></td>"));
        assert!(
            !page.contains("<code>/b</code>"),
            "only tagged operations are listed"
        );
        assert!(!page.contains("<script"));
    }
}
