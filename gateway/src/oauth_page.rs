//! The OAuth consent page, rendered on the server: plain HTML forms that
//! work without JavaScript. Kept apart from the handlers so the web
//! console can show the same page. Every string that comes from a user
//! (an application's name, a user name, a `state`) is escaped.

/// What the consent page shows and carries.
#[derive(Debug, Clone, Default)]
pub struct ConsentPage {
    pub app_name: String,
    pub app_description: String,
    pub organization: String,
    /// Each scope asked for, with what it lets the application do.
    pub scopes: Vec<(String, String)>,
    /// The request, carried through the form as hidden fields (with the
    /// CSRF token), so approving repeats exactly what was shown.
    pub fields: Vec<(String, String)>,
    /// The signed-in user, or `None`: the form asks for a user name and a
    /// password.
    pub signed_in_as: Option<String>,
    /// Why the last attempt failed (a wrong password).
    pub error: Option<String>,
}

/// The page a request that cannot be sent back to its application gets.
#[derive(Debug, Clone)]
pub struct ErrorPage {
    /// The OAuth error code (`invalid_request`, `invalid_client`, …).
    pub error: String,
    pub message: String,
}

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

const HEAD: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">";

impl ConsentPage {
    pub fn render(&self) -> String {
        let mut h = String::from(HEAD);
        h.push_str(&format!("<title>Authorize {}</title></head><body>\n", escape(&self.app_name)));
        h.push_str(&format!(
            "<h1>Authorize <span id=\"app-name\">{}</span></h1>\n<p>An application of the organization <strong id=\"app-org\">{}</strong> asks to act for you.</p>\n",
            escape(&self.app_name),
            escape(&self.organization)
        ));
        if !self.app_description.is_empty() {
            h.push_str(&format!("<p class=\"description\">{}</p>\n", escape(&self.app_description)));
        }
        if let Some(e) = &self.error {
            h.push_str(&format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(e)));
        }
        h.push_str("<p>It will be able to:</p>\n<ul id=\"scopes\">\n");
        for (scope, words) in &self.scopes {
            h.push_str(&format!("<li data-scope=\"{}\">{}</li>\n", escape(scope), escape(words)));
        }
        h.push_str("</ul>\n<form method=\"post\" action=\"/oauth/authorizeapp\">\n");
        self.hidden(&mut h);
        match &self.signed_in_as {
            Some(u) => h.push_str(&format!("<p>Signed in as <strong>{}</strong>.</p>\n", escape(u))),
            None => h.push_str(
                "<p><label>User name <input name=\"username\" autocomplete=\"username\" required></label></p>\n<p><label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\n",
            ),
        }
        h.push_str("<button type=\"submit\">Authorize application</button>\n</form>\n<form method=\"post\" action=\"/oauth/denyapp\">\n");
        self.hidden(&mut h);
        h.push_str("<button type=\"submit\">Deny</button>\n</form>\n</body></html>\n");
        h
    }

    fn hidden(&self, h: &mut String) {
        for (name, value) in &self.fields {
            h.push_str(&format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">\n", escape(name), escape(value)));
        }
    }
}

impl ErrorPage {
    pub fn render(&self) -> String {
        format!(
            "{HEAD}<title>Authorization failed</title></head><body>\n<h1>Authorization failed</h1>\n<p><code id=\"error\">{}</code>: {}</p>\n</body></html>\n",
            escape(&self.error),
            escape(&self.message)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_strings_are_escaped_everywhere() {
        let evil = "<script>alert(\"x\")</script>'&";
        let page = ConsentPage {
            app_name: evil.into(),
            app_description: evil.into(),
            organization: evil.into(),
            scopes: vec![(evil.into(), evil.into())],
            fields: vec![("state".into(), evil.into())],
            signed_in_as: Some(evil.into()),
            error: Some(evil.into()),
        }
        .render();
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("\"x\""));
        assert!(page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39;&amp;"));
        let err = ErrorPage { error: evil.into(), message: evil.into() }.render();
        assert!(!err.contains("<script>"));
    }
}
