// Unit tests for include/cowguard/warmup_requests.h: the request files of
// cowguard-warmup-requests, good and bad lines, and the server address of a socket name.
#include <cstdlib>
#include <string>

#include "cowguard/warmup_requests.h"

// Last: check.h defines a fail() macro that breaks <ios> and friends.
#include <check.h>
#include "run_suite.h"

using cowguard::warmup::format_request;
using cowguard::warmup::parse_requests;
using cowguard::warmup::server_address;

namespace {
// The text is refused with exactly `expected` (one line).
void expect_error(const std::string& text, const std::string& expected) {
    auto r = parse_requests(text);
    ck_assert_msg(!r.ok(), "accepted: %s", text.c_str());
    ck_assert_str_eq(r.error().c_str(), expected.c_str());
}
}  // namespace

START_TEST(lines_comments_and_blanks) {
    auto r = parse_requests(
        "# the pages a first visitor sees\n"
        "/\n"
        "\n"
        "   \t\n"
        "  # indented comment\n"
        "GET /products/?page=2&sort=name\n"
        "HEAD /about/   Accept-Language: fr  X-Probe:1\r\n"
        "/search?q=a%20b User-Agent: \"Mozilla/5.0 (X11; \\\"q\\\" \\\\)\" Cookie: \"\"\n"
        "/last-line-without-newline");
    ck_assert(r.ok());
    ck_assert_int_eq(r->size(), 5);
    const auto& a = (*r)[0];
    ck_assert_int_eq(a.line, 2);
    ck_assert_str_eq(a.method.c_str(), "GET");
    ck_assert_str_eq(a.path.c_str(), "/");
    ck_assert_str_eq(a.query.c_str(), "");
    ck_assert(a.headers.empty());
    const auto& b = (*r)[1];
    ck_assert_int_eq(b.line, 6);
    ck_assert_str_eq(b.path.c_str(), "/products/");
    ck_assert_str_eq(b.query.c_str(), "page=2&sort=name");
    const auto& c = (*r)[2];
    ck_assert_str_eq(c.method.c_str(), "HEAD");
    ck_assert_int_eq(c.headers.size(), 2);
    ck_assert_str_eq(c.headers[0].first.c_str(), "Accept-Language");
    ck_assert_str_eq(c.headers[0].second.c_str(), "fr");
    ck_assert_str_eq(c.headers[1].first.c_str(), "X-Probe");
    ck_assert_str_eq(c.headers[1].second.c_str(), "1");
    const auto& d = (*r)[3];
    ck_assert_str_eq(d.query.c_str(), "q=a%20b");
    ck_assert_str_eq(d.headers[0].second.c_str(), "Mozilla/5.0 (X11; \"q\" \\)");
    ck_assert_str_eq(d.headers[1].first.c_str(), "Cookie");
    ck_assert_str_eq(d.headers[1].second.c_str(), "");
    ck_assert_int_eq((*r)[4].line, 9);
}
END_TEST

START_TEST(empty_and_comment_only_files) {
    ck_assert(parse_requests("")->empty());
    ck_assert(parse_requests("").ok());
    auto r = parse_requests("# nothing yet\n\n");
    ck_assert(r.ok());
    ck_assert(r->empty());
}
END_TEST

START_TEST(format_round_trips) {
    auto r = parse_requests("/a?x=1 A: b C: \"d e\" E: \"\" F: \"q\\\"\"\nPOST /");
    ck_assert(r.ok());
    std::string f = format_request((*r)[0]);
    ck_assert_str_eq(f.c_str(), "GET /a?x=1 A: b C: \"d e\" E: \"\" F: \"q\\\"\"");
    auto again = parse_requests(f);
    ck_assert(again.ok());
    ck_assert((*again)[0].headers == (*r)[0].headers);
    std::string post = format_request((*r)[1]);
    ck_assert_str_eq(post.c_str(), "POST /");
}
END_TEST

START_TEST(bad_lines_name_their_number) {
    expect_error("/\nget /x",
                     "2: 'get' is neither a method (upper-case letters) nor a target (starting with '/')");
    expect_error("products/",
                     "1: 'products/' is neither a method (upper-case letters) nor a target (starting with '/')");
    expect_error("GET", "1: no target after the method (a path starting with '/')");
    expect_error("GET http://x/", "1: target 'http://x/' does not start with '/'");
    expect_error("GET GET /", "1: target 'GET' does not start with '/'");
    expect_error("/a#frag", "1: target '/a#frag' has a fragment ('#')");
    expect_error("/\xc3\xa9t\xc3\xa9",
                     "1: target '/\\xc3\\xa9t\\xc3\\xa9' has a character to percent-encode");
    expect_error("/ nocolon", "1: 'nocolon' is not a header (Name: value)");
    expect_error("/ :v", "1: ':v' is not a header (Name: value)");
    expect_error("/ Bad_Name: v", "1: 'Bad_Name:' is not a header (Name: value)");
    expect_error("/ X-A:", "1: header X-A has no value (write X-A: \"\" for an empty one)");
    expect_error("/ X-A: \"open", "1: header X-A: the quoted value has no closing '\"'");
    expect_error("/ X-A: \"a\"b", "1: header X-A: text right after the closing '\"'");
    expect_error("/ X-A: \"a\\n\"",
                     "1: header X-A: only \\\" and \\\\ may follow a '\\' in a quoted value");
    expect_error("/ X-A: a\"b",
                     "1: header X-A: value 'a\"b' has a '\"' or a control character (quote it)");
    expect_error("/ X-A: \"a\x01\"", "1: header X-A: the value has a control character");
    expect_error("/ Accept: a accept: b", "1: header accept given twice");
    expect_error(std::string("\n\n/\0x", 5), "3: a NUL byte (not a text file?)");
    std::string long_method(33, 'A');
    expect_error(long_method + " /",
                     "1: method '" + long_method + "' is longer than 32 letters");
}
END_TEST

START_TEST(nul_byte_inside_a_string_view) {
    std::string text("/a\n/b\0c\n", 8);
    auto r = parse_requests(text);
    ck_assert(!r.ok());
    ck_assert_str_eq(r.error().c_str(), "2: a NUL byte (not a text file?)");
}
END_TEST

START_TEST(server_addresses) {
    auto check = [](const char* name, const char* host, const char* port) {
        auto [h, p] = server_address(name);
        ck_assert_msg(h == host && p == port, "%s -> %s %s", name, h.c_str(), p.c_str());
    };
    check("127.0.0.1:8000", "127.0.0.1", "8000");
    check(":8000", "localhost", "8000");
    check("0.0.0.0:80", "localhost", "80");
    check("example.org:8080", "example.org", "8080");
    check("[::1]:9000", "::1", "9000");
    check("[::]:9000", "localhost", "9000");
    check("/run/app.sock", "localhost", "80");
    check("@abstract", "localhost", "80");
    check("", "localhost", "80");
    check("host:notaport", "host", "80");
}
END_TEST

int main() {
    Suite* suite = suite_create("warmup_requests");
    TCase* tc = tcase_create("check");
    tcase_add_test(tc, lines_comments_and_blanks);
    tcase_add_test(tc, empty_and_comment_only_files);
    tcase_add_test(tc, format_round_trips);
    tcase_add_test(tc, bad_lines_name_their_number);
    tcase_add_test(tc, nul_byte_inside_a_string_view);
    tcase_add_test(tc, server_addresses);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
