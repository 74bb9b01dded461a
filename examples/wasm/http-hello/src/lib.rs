//! A wasi:http handler: answers every request with `GREETING from POD (METHOD PATH)`, where
//! POD is the `POD_NAME` variable (the manifest sets it from `metadata.name`) and GREETING the
//! `GREETING` variable, `hello` without it. With `SERVE_FILE` set it answers with that file
//! instead (404 while there is none): how the IoT example serves its readings. Build it for
//! `wasm32-wasip2`; Shoal serves it on the container's port, one instance per request.

use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

wasi::http::proxy::export!(Hello);

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let method = match request.method() {
            Method::Get => "GET".to_string(),
            Method::Post => "POST".to_string(),
            other => format!("{other:?}"),
        };
        let path = request.path_with_query().unwrap_or_default();
        let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "an unnamed pod".into());
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hello".into());
        let (status, text) = match std::env::var("SERVE_FILE") {
            Ok(file) => match std::fs::read_to_string(&file) {
                Ok(text) => (200, text),
                Err(e) => (404, format!("{file}: {e}\n")),
            },
            Err(_) => (200, format!("{greeting} from {pod} ({method} {path})\n")),
        };
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            let _ = stream.blocking_write_and_flush(text.as_bytes());
        }
        let _ = OutgoingBody::finish(body, None);
    }
}
