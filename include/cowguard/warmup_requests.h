// The request files of cowguard-warmup-requests (pure: text in, requests out; no uWSGI, no
// CPython). One request per line:
//
//   [METHOD] TARGET [Name: value]...
//
//   METHOD  upper-case letters, GET when left out
//   TARGET  the request target as on the wire: starts with '/', path and optional ?query,
//           percent-encoded, no spaces
//   header  a name (letters, digits, '-'), a colon, optional spaces, and a value: one word with
//           no space and no '"', or a "double-quoted string" (\" and \\ inside); each name once
//
// Blank lines and lines whose first non-space character is '#' are skipped.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cowguard/result.h"

namespace cowguard::warmup {

struct Request {
    int line = 0;                // 1-based line in its file
    std::string method;          // "GET" when the line gave none
    std::string path;            // TARGET before '?', still percent-encoded
    std::string query;           // after '?', without it ("" when none)
    std::vector<std::pair<std::string, std::string>> headers;  // names as written, in order
};

// The requests, or the error "LINE: what is wrong" for the first bad line.
Result<std::vector<Request>> parse_requests(std::string_view text);

// The line back in the file's syntax (method always written, values quoted where they must be).
std::string format_request(const Request& r);

// SERVER_NAME and SERVER_PORT for a uWSGI socket name ("127.0.0.1:8000", ":8000",
// "0.0.0.0:80", "[::1]:8000", "/run/app.sock"): the address the socket serves, "localhost" for
// an unspecified or UNIX one, port "80" when the name has none.
std::pair<std::string, std::string> server_address(std::string_view socket_name);

}  // namespace cowguard::warmup
