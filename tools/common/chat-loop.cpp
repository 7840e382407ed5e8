#include "tools/common/chat-loop.h"

#include "decoder/chat.h"
#include "decoder/gguf.h"
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/tokenizer.h"
#include "base/error.h"
#include "tools/common/cli.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include <vector>

namespace gloas::chat_cli {

namespace {

// SIGINTs received; the handler increments it and writes a byte to the wake
// pipe, so a wait for input returns whichever thread the signal lands on.
std::atomic<int> g_interrupts{0};
int g_wake[2] = {-1, -1};
static_assert(std::atomic<int>::is_always_lock_free, "the SIGINT flag must be lock-free");

void on_sigint(int) {
    g_interrupts.fetch_add(1);
    if (g_wake[1] >= 0) {
        const char c = 1;
        const ssize_t k = ::write(g_wake[1], &c, 1);  // full pipe: a wake-up is already pending
        (void) k;
    }
}

// Forgets the SIGINTs received so far.
void clear_interrupts() {
    g_interrupts.store(0);
    char tmp[64];
    if (g_wake[0] >= 0)
        while (::read(g_wake[0], tmp, sizeof tmp) > 0) {}
}

// Lines from fd 0. Waiting for input ends early on a SIGINT.
class line_reader {
public:
    enum result { LINE, END, INTERRUPTED };

    result next(std::string & line) {
        line.clear();
        for (;;) {
            const size_t nl = buf_.find('\n');
            if (nl != std::string::npos || (eof_ && !buf_.empty())) {
                const size_t n = nl == std::string::npos ? buf_.size() : nl;
                line.append(buf_, 0, n);
                buf_.erase(0, nl == std::string::npos ? n : n + 1);
                if (!line.empty() && line.back() == '\r') line.pop_back();
                if (!line.empty() && line.back() == '\\' && !(eof_ && buf_.empty())) {
                    line.back() = '\n';
                    continue;
                }
                return LINE;
            }
            if (eof_) return line.empty() ? END : LINE;
            if (g_interrupts.load() > 0) {
                line.clear();
                return INTERRUPTED;
            }
            struct pollfd fds[2] = {{0, POLLIN, 0}, {g_wake[0], POLLIN, 0}};
            if (::poll(fds, g_wake[0] >= 0 ? 2 : 1, -1) < 0) {
                if (errno != EINTR) eof_ = true;
                continue;
            }
            if (fds[0].revents == 0) continue;  // woken by a SIGINT: checked above
            char tmp[4096];
            const ssize_t k = ::read(0, tmp, sizeof tmp);
            if (k > 0) buf_.append(tmp, size_t(k));
            else if (k == 0 || errno != EINTR) eof_ = true;
        }
    }

private:
    std::string buf_;
    bool eof_ = false;
};

} // namespace

bool reply_text::add(std::string_view piece) {
    GLOAS_ASSERT(!ended());
    const size_t before = text_.size();
    text_ += piece;
    if (marker_.empty()) return false;
    end_ = text_.find(marker_, before >= marker_.size() ? before - marker_.size() + 1 : 0);
    return ended();
}

std::string reply_text::take_showable(bool last) {
    const size_t stop = ended() || last ? std::min(end_, text_.size()) : shown_ + showable(std::string_view(text_).substr(shown_));
    std::string s = stop > shown_ ? text_.substr(shown_, stop - shown_) : std::string();
    shown_ = std::max(shown_, stop);
    return s;
}

size_t reply_text::showable(std::string_view s) const {
    size_t hold = 0;
    const size_t most = marker_.empty() ? 0 : std::min(marker_.size() - 1, s.size());
    for (size_t k = most; k > 0; --k)
        if (s.substr(s.size() - k) == std::string_view(marker_).substr(0, k)) {
            hold = k;
            break;
        }
    return utf8_complete_prefix(s.substr(0, s.size() - hold));
}

int chat_loop(const model & m, context & ctx, const sampler_params & sp, const chat_options & co) {
    const tokenizer & tok = m.tok;
    std::string jinja;
    if (co.template_name.empty() && m.file_format == "gguf")
        jinja = gguf_file::open(m.path)->get_str("tokenizer.chat_template");
    std::string note;
    const chat_template t = chat_template_choose(co.template_name, jinja, m.path, &note);
    const std::string marker = chat_end_marker(t);
    if (!note.empty()) cli::warning(note);
    if (!co.quiet)
        std::fprintf(stderr, "gloas: chat format %s (%s); one line per message, Ctrl-C stops a reply, Ctrl-D quits\n",
                     chat_template_name(t), !co.template_name.empty() ? "--chat-template"
                                            : note.empty() ? "from the model's tokenizer.chat_template" : "the default");

    if (g_wake[0] < 0 && ::pipe2(g_wake, O_NONBLOCK | O_CLOEXEC) != 0) g_wake[0] = g_wake[1] = -1;
    struct sigaction sa = {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, nullptr);

    chat_session chat(t, co.system);
    sampler smp(sp, m.hp.n_vocab);
    const bool tty = ::isatty(0) != 0;
    line_reader in;
    int32_t pending = -1;  // the last reply's last token: shown, not yet evaluated
    int idle_interrupts = 0;
    bool full = false;
    std::string line;
    while (!full) {
        if (tty) std::fputs("> ", stderr);
        const line_reader::result r = in.next(line);
        if (r == line_reader::END) break;
        if (r == line_reader::INTERRUPTED) {
            clear_interrupts();
            if (++idle_interrupts >= 2) break;
            std::fputs("\n(Ctrl-C again or Ctrl-D to quit)\n", stderr);
            continue;
        }
        idle_interrupts = 0;
        clear_interrupts();
        if (line.empty()) continue;

        const std::string text = chat.add_user(line);
        const int32_t turn = chat.n_turns();
        if (co.verbose_prompt) {
            std::fprintf(stderr, "gloas: turn %d prompt, %zu bytes:\n", turn, text.size());
            std::fwrite(text.data(), 1, text.size(), stderr);
            std::fputc('\n', stderr);
        }
        std::vector<int32_t> toks;
        if (pending >= 0) toks.push_back(pending);
        const std::vector<int32_t> enc = tok.encode(text, turn == 1 && tok.add_bos(), true);
        toks.insert(toks.end(), enc.begin(), enc.end());
        const int32_t n_past0 = ctx.n_past();
        const double t0 = cli::now_s();
        const float * logits = nullptr;
        try {
            logits = turn == 1 ? ctx.eval_prompt(toks.data(), int32_t(toks.size()))
                               : ctx.eval(toks.data(), int32_t(toks.size()));
        } catch (const context_full_error &) {  // nothing was evaluated
            std::fprintf(stderr, "gloas: the context is full: this turn needs %zu more positions, %d of %d are left; "
                         "chat ended (raise -c for longer chats)\n", toks.size(), ctx.n_ctx() - n_past0, ctx.n_ctx());
            break;
        }
        const double t_prefill = cli::now_s() - t0;
        pending = -1;
        for (int32_t id : toks) smp.accept(id);
        const int32_t reused = turn == 1 ? ctx.n_reused() : 0;
        const int32_t prefilled = int32_t(toks.size()) - reused;
        if (!co.quiet)
            std::fprintf(stderr, "gloas: turn %d: %zu tokens, %d prefilled (%.1f tokens/s), %d positions kept "
                     "(%d from earlier turns, %d reused from the K/V store)\n",
                     turn, toks.size(), prefilled, t_prefill > 0 ? prefilled / t_prefill : 0.0, n_past0 + reused,
                     n_past0, reused);

        reply_text reply(marker);
        size_t evaluated = 0;  // bytes of the reply whose tokens are in the K/V (or pending)
        int32_t prev = toks.back(), n_reply = 0;
        const char * stop = "limit";
        auto show = [&](bool last) {
            const std::string s = reply.take_showable(last);
            std::fwrite(s.data(), 1, s.size(), stdout);
            std::fflush(stdout);
        };
        const double t1 = cli::now_s();
        for (;;) {
            if (g_interrupts.load() > 0) {
                stop = "interrupted";
                break;
            }
            if (n_reply >= co.n_predict) break;
            const int32_t id = smp.sample(logits);
            if (!co.ignore_eos && (tok.is_eog(id) || id == tok.bos())) {
                stop = "end of turn";
                break;
            }
            smp.accept(id);
            ++n_reply;
            if (reply.add(tok.token_to_piece(prev, id))) {
                stop = "end marker";  // this token is dropped: the next turn starts with the marker's rest
                break;
            }
            prev = id;
            show(false);
            if (n_reply >= co.n_predict) {
                pending = id;  // evaluated at the start of the next turn
                evaluated = reply.text().size();
                break;
            }
            try {
                logits = ctx.eval(&id, 1);
            } catch (const context_full_error &) {  // (never when the context slides)
                stop = "context full";
                full = true;
                break;
            }
            evaluated = reply.text().size();
        }
        clear_interrupts();  // the one that stopped this reply; later ones are at the prompt
        show(true);
        std::fputc('\n', stdout);
        std::fflush(stdout);
        const double t_reply = cli::now_s() - t1;
        if (!co.quiet)
            std::fprintf(stderr, "gloas: turn %d: reply %d tokens (%s), %.1f tokens/s\n", turn, n_reply, stop,
                         t_reply > 0 ? n_reply / t_reply : 0.0);
        chat.add_assistant(reply.content(), reply.text().substr(0, evaluated));
        if (full) std::fprintf(stderr, "gloas: the context is full (%d positions); chat ended (raise -c for longer chats)\n", ctx.n_ctx());
    }
    ctx.store().flush();
    if (!co.quiet)
        std::fprintf(stderr, "gloas: chat ended after %d turns, %d positions in the context\n", chat.n_turns(), ctx.n_past());
    if (!co.quiet && sp.temp > 0) std::fprintf(stderr, "gloas: seed %llu\n", (unsigned long long) smp.seed());
    return 0;
}

} // namespace gloas::chat_cli
