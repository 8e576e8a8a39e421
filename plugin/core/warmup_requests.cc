// Request files of cowguard-warmup-requests (pure). See include/cowguard/warmup_requests.h.
#include "cowguard/warmup_requests.h"
#include "cowguard/options.h"

#include <cctype>
#include <cstdio>

namespace cowguard::warmup {

namespace {

constexpr size_t kMaxMethod = 32;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }
bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || is_upper(c) || (c >= '0' && c <= '9') || c == '-';
}
bool is_visible(char c) { return c > 0x20 && c < 0x7f; }

// The text as written, every control and non-ASCII byte as \xNN (a request line is ASCII).
std::string shown(std::string_view s) { return printable(s, true); }

// Reads one line's fields; on error returns the message (without the line number).
class LineParser {
   public:
    explicit LineParser(std::string_view s) : s_(s) {}

    Status parse(Request& r) {
        skip_spaces();
        std::string_view first = word();
        if (!first.empty() && first.front() != '/') {
            for (char c : first)
                if (!is_upper(c))
                    return fail_with("'" + shown(first) + "' is neither a method (upper-case letters) nor a target (starting with '/')");
            if (first.size() > kMaxMethod) return fail_with("method '" + shown(first) + "' is longer than 32 letters");
            r.method = std::string(first);
            skip_spaces();
            first = word();
            if (first.empty()) return fail_with("no target after the method (a path starting with '/')");
            if (first.front() != '/') return fail_with("target '" + shown(first) + "' does not start with '/'");
        } else {
            r.method = "GET";
        }
        for (char c : first)
            if (!is_visible(c) || c == '"')
                return fail_with("target '" + shown(first) + "' has a character to percent-encode");
        if (first.find('#') != std::string_view::npos) return fail_with("target '" + shown(first) + "' has a fragment ('#')");
        size_t q = first.find('?');
        r.path = std::string(first.substr(0, q));
        r.query = q == std::string_view::npos ? "" : std::string(first.substr(q + 1));
        while (true) {
            skip_spaces();
            if (at_end()) return {};
            if (Status e = header(r); !e) return e;
        }
    }

   private:
    bool at_end() const { return i_ >= s_.size(); }
    void skip_spaces() {
        while (!at_end() && is_space(s_[i_])) i_++;
    }
    std::string_view word() {
        size_t b = i_;
        while (!at_end() && !is_space(s_[i_])) i_++;
        return s_.substr(b, i_ - b);
    }

    Status header(Request& r) {
        size_t b = i_;
        while (!at_end() && is_name_char(s_[i_])) i_++;
        std::string name(s_.substr(b, i_ - b));
        if (at_end() || s_[i_] != ':' || name.empty()) {
            i_ = b;
            return fail_with("'" + shown(word()) + "' is not a header (Name: value)");
        }
        i_++;  // ':'
        skip_spaces();
        if (at_end()) return fail_with("header " + name + " has no value (write " + name + ": \"\" for an empty one)");
        std::string value;
        if (s_[i_] == '"') {
            i_++;
            while (true) {
                if (at_end()) return fail_with("header " + name + ": the quoted value has no closing '\"'");
                char c = s_[i_++];
                if (c == '"') break;
                if (c == '\\') {
                    if (at_end() || (s_[i_] != '"' && s_[i_] != '\\'))
                        return fail_with("header " + name + ": only \\\" and \\\\ may follow a '\\' in a quoted value");
                    c = s_[i_++];
                } else if (c != ' ' && c != '\t' && !is_visible(c)) {
                    return fail_with("header " + name + ": the value has a control character");
                }
                value += c;
            }
            if (!at_end() && !is_space(s_[i_])) return fail_with("header " + name + ": text right after the closing '\"'");
        } else {
            std::string_view w = word();
            for (char c : w)
                if (!is_visible(c) || c == '"')
                    return fail_with("header " + name + ": value '" + shown(w) + "' has a '\"' or a control character (quote it)");
            value = std::string(w);
        }
        for (const auto& h : r.headers) {
            std::string a = h.first, b2 = name;
            for (auto& c : a) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            for (auto& c : b2) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (a == b2) return fail_with("header " + name + " given twice");
        }
        r.headers.emplace_back(std::move(name), std::move(value));
        return {};
    }

    std::string_view s_;
    size_t i_ = 0;
};

}  // namespace

Result<std::vector<Request>> parse_requests(std::string_view text) {
    std::vector<Request> requests;
    int line_no = 0;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
        line_no++;
        if (line.find('\0') != std::string_view::npos)
            return fail_with(std::to_string(line_no) + ": a NUL byte (not a text file?)");
        size_t b = 0;
        while (b < line.size() && is_space(line[b])) b++;
        if (b == line.size() || line[b] == '#') continue;
        Request r;
        r.line = line_no;
        if (Status parsed = LineParser(line).parse(r); !parsed)
            return fail_with(std::to_string(line_no) + ": " + parsed.error());
        requests.push_back(std::move(r));
    }
    return requests;
}

std::string format_request(const Request& r) {
    std::string s = r.method + " " + r.path;
    if (!r.query.empty()) s += "?" + r.query;
    for (const auto& [name, value] : r.headers) {
        bool plain = !value.empty();
        for (char c : value) plain = plain && is_visible(c) && c != '"' && c != '\\';
        s += " " + name + ": ";
        if (plain) {
            s += value;
            continue;
        }
        s += '"';
        for (char c : value) {
            if (c == '"' || c == '\\') s += '\\';
            s += c;
        }
        s += '"';
    }
    return s;
}

std::pair<std::string, std::string> server_address(std::string_view name) {
    std::string host, port = "80";
    if (name.empty() || name.front() == '/' || name.front() == '@') return {"localhost", port};
    size_t colon = name.rfind(':');
    size_t bracket = name.rfind(']');
    if (colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket)) {
        host = std::string(name.substr(0, colon));
        std::string_view p = name.substr(colon + 1);
        bool digits = !p.empty();
        for (char c : p) digits = digits && c >= '0' && c <= '9';
        if (digits) port = std::string(p);
    } else {
        host = std::string(name);
    }
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    if (host.empty() || host == "0.0.0.0" || host == "::" || host == "*") host = "localhost";
    return {host, port};
}

}  // namespace cowguard::warmup
