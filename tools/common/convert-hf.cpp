#include "tools/common/convert-hf.h"

#include "decoder/spm-model.h"
#include "base/error.h"
#include "tensor/mmap.h"
#include "tools/common/files.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <dirent.h>
#include <map>
#include <set>
#include <utility>

namespace gloas::convert {

using json = nlohmann::json;
using cli::base_name;

void add(plan & p, const std::string & name, std::shared_ptr<const source> s, type outtype) {
    const bool vec = s->vec;
    p.tensors.push_back({name, std::move(s), vec ? type::F32 : outtype, vec ? 1 : 2});
}

namespace {

json read_json(const std::string & path) {
    const std::string text = read_whole_file(path);
    try {
        return json::parse(text);
    } catch (const json::exception & e) {
        throw error(format("%s: invalid JSON: %s", path.c_str(), e.what()));
    }
}

// Hugging Face's rotary permutation undone: output row h*hd + 2*i + j comes
// from source row h*hd + j*hd/2 + i (per head of hd rows; i < hd/2, j < 2).
std::vector<int64_t> unpermute_rows(int64_t n_head, int64_t hd) {
    std::vector<int64_t> m(size_t(n_head * hd));
    for (int64_t h = 0; h < n_head; ++h)
        for (int64_t i = 0; i < hd / 2; ++i)
            for (int64_t j = 0; j < 2; ++j) m[size_t(h * hd + 2 * i + j)] = h * hd + j * (hd / 2) + i;
    return m;
}

// The families gloas-convert reads: model_type -> the GGUF architecture.
struct hf_family {
    const char * model_type;
    const char * arch;
    const char * act;  // hidden_act it expects
};
constexpr hf_family k_families[] = {
    {"llama", "llama", "silu"},          {"mistral", "llama", "silu"}, {"qwen2", "qwen2", "silu"},
    {"qwen3", "qwen3", "silu"},          {"phi3", "phi3", "silu"},     {"gemma2", "gemma2", "gelu_pytorch_tanh"},
    {"gemma3_text", "gemma3", "gelu_pytorch_tanh"},
};

// config.json: the GGUF hyperparameters it gives (hp: arch, shape, rope and
// the family's own keys; name and wtype are the caller's) and what else the
// conversion needs.
struct hf_config {
    llama_gguf_hparams hp;
    bool tied = false;
    int64_t bos = -1, eos = -1;
    std::vector<float> long_factor, short_factor;  // phi3 longrope, (n_rot / 2) each
};

hf_config read_config(const std::string & path) {
    const json j = read_json(path);
    if (!j.is_object()) throw error(path + ": not a JSON object");
    auto get_int = [&](const char * key, int64_t def, bool required) -> int64_t {
        auto it = j.find(key);
        if (it == j.end() || it->is_null()) {
            if (required) throw error(format("%s: missing field '%s'", path.c_str(), key));
            return def;
        }
        if (!it->is_number_integer() || it->get<int64_t>() <= 0 || it->get<int64_t>() > (int64_t(1) << 31) - 1)
            throw error(format("%s: field '%s' must be a positive integer (is %s)", path.c_str(), key, it->dump().c_str()));
        return it->get<int64_t>();
    };
    auto get_float = [&](const char * key, float def) -> float {
        auto it = j.find(key);
        if (it == j.end() || it->is_null()) return def;
        if (!it->is_number() || !(it->get<double>() > 0) || !std::isfinite(it->get<double>()))
            throw error(format("%s: field '%s' must be a positive number (is %s)", path.c_str(), key, it->dump().c_str()));
        return float(it->get<double>());
    };
    // The architecture, by model_type (Llama when absent).
    std::string mt = "llama";
    if (auto it = j.find("model_type"); it != j.end()) {
        if (!it->is_string()) throw error(path + ": field 'model_type' must be a string");
        mt = it->get<std::string>();
    }
    const hf_family * fam = nullptr;
    std::string known;
    for (const hf_family & f : k_families) {
        if (mt == f.model_type) fam = &f;
        known += (known.empty() ? "" : ", ") + std::string(f.model_type);
    }
    if (!fam) {
        if (mt.find("moe") != std::string::npos)
            throw error(format("%s: model_type '%s' is a mixture-of-experts model, which gloas does not support", path.c_str(), mt.c_str()));
        if (j.contains("vision_config"))
            throw error(format("%s: model_type '%s' has a vision tower, which gloas does not support (text models only; "
                               "for Gemma 3 use a text-only checkpoint, model_type gemma3_text)", path.c_str(), mt.c_str()));
        throw error(format("%s: model_type '%s' is not supported (supported: %s)", path.c_str(), mt.c_str(), known.c_str()));
    }
    const std::string arch = fam->arch;
    for (const char * key : {"hidden_act", "hidden_activation"})
        if (auto it = j.find(key); it != j.end() && !it->is_null() && !(it->is_string() && it->get<std::string>() == fam->act))
            throw error(format("%s: %s %s is not supported for %s (only \"%s\")", path.c_str(), key, it->dump().c_str(),
                               mt.c_str(), fam->act));
    json rope_scaling;
    if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
        rope_scaling = *it;
        const std::string rt = rope_scaling.is_object() ? rope_scaling.value("rope_type", rope_scaling.value("type", std::string())) : "";
        const bool ok = (arch == "gemma3" && rt == "linear") || (arch == "phi3" && (rt == "longrope" || rt == "su"));
        if (!ok) throw error(format("%s: rope_scaling %s is not supported for %s", path.c_str(), it->dump().c_str(), mt.c_str()));
    }
    if (auto it = j.find("attention_bias"); it != j.end() && !(it->is_boolean() && !it->get<bool>()))
        throw error(format("%s: attention_bias %s is not supported", path.c_str(), it->dump().c_str()));

    hf_config c;
    c.hp.arch = arch;
    c.hp.n_embd = get_int("hidden_size", 0, true);
    c.hp.n_ff = get_int("intermediate_size", 0, true);
    c.hp.n_layer = get_int("num_hidden_layers", 0, true);
    c.hp.n_head = get_int("num_attention_heads", 0, true);
    c.hp.n_head_kv = get_int("num_key_value_heads", c.hp.n_head, false);
    c.hp.n_vocab = get_int("vocab_size", 0, true);
    c.hp.n_ctx = get_int("max_position_embeddings", 2048, false);
    c.hp.rms_eps = get_float("rms_norm_eps", 1e-6f);
    c.hp.rope_freq_base = get_float("rope_theta", 10000.0f);
    if (c.hp.n_embd % c.hp.n_head != 0 && !j.contains("head_dim"))
        throw error(format("%s: hidden_size %lld is not a multiple of num_attention_heads %lld", path.c_str(),
                           (long long) c.hp.n_embd, (long long) c.hp.n_head));
    c.hp.head_dim = get_int("head_dim", c.hp.n_embd / c.hp.n_head, false);
    if (c.hp.head_dim % 2 != 0) throw error(format("%s: head_dim %lld must be even", path.c_str(), (long long) c.hp.head_dim));
    if (c.hp.n_head % c.hp.n_head_kv != 0)
        throw error(format("%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld", path.c_str(),
                           (long long) c.hp.n_head, (long long) c.hp.n_head_kv));
    if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
        if (!it->is_boolean()) throw error(path + ": field 'tie_word_embeddings' must be true or false");
        c.tied = it->get<bool>();
    }
    if (arch == "gemma2" || arch == "gemma3") c.tied = true;  // Gemma has no lm_head
    // The family's own keys, as llama.cpp's converter reads them.
    auto opt_float = [&](const char * key) -> float {
        auto it = j.find(key);
        return it == j.end() || it->is_null() ? 0.0f : get_float(key, 0.0f);
    };
    if (arch == "gemma2" || arch == "gemma3") c.hp.sliding_window = get_int("sliding_window", 0, false);
    if (arch == "gemma2") {
        c.hp.attn_softcap = opt_float("attn_logit_softcapping");
        c.hp.final_softcap = opt_float("final_logit_softcapping");
    }
    if (arch == "gemma3" && rope_scaling.is_object()) {
        auto f = rope_scaling.find("factor");
        if (f == rope_scaling.end() || !f->is_number() || !(f->get<double>() > 0))
            throw error(path + ": rope_scaling.factor must be a positive number");
        c.hp.rope_linear = float(f->get<double>());
    }
    if (arch == "phi3") {
        double rot = 1.0;
        if (auto it = j.find("partial_rotary_factor"); it != j.end() && !it->is_null()) {
            if (!it->is_number() || !(it->get<double>() > 0) || it->get<double>() > 1)
                throw error(path + ": partial_rotary_factor must be in (0, 1]");
            rot = it->get<double>();
        }
        c.hp.n_rot = int64_t(rot * double(c.hp.n_embd)) / c.hp.n_head;  // llama.cpp's rounding
        if (c.hp.n_rot <= 0 || c.hp.n_rot % 2 != 0 || c.hp.n_rot > c.hp.head_dim)
            throw error(format("%s: partial_rotary_factor gives %lld rotary dims (must be even, at most head_dim)",
                               path.c_str(), (long long) c.hp.n_rot));
        if (rope_scaling.is_object()) {
            c.hp.ctx_orig = get_int("original_max_position_embeddings", 0, true);
            for (auto [key, dst] : {std::make_pair("long_factor", &c.long_factor), std::make_pair("short_factor", &c.short_factor)}) {
                auto it = rope_scaling.find(key);
                if (it == rope_scaling.end() || !it->is_array() || it->size() != size_t(c.hp.n_rot / 2))
                    throw error(format("%s: rope_scaling.%s must be a list of %lld numbers (rotary dims / 2)", path.c_str(), key,
                                       (long long) (c.hp.n_rot / 2)));
                for (const json & v : *it) {
                    if (!v.is_number() || !(v.get<double>() > 0)) throw error(format("%s: rope_scaling.%s holds a non-positive value", path.c_str(), key));
                    dst->push_back(float(v.get<double>()));
                }
            }
            const double scale = double(c.hp.n_ctx) / double(c.hp.ctx_orig);
            c.hp.rope_attn_factor = scale > 1.0 ? float(std::sqrt(1.0 + std::log(scale) / std::log(double(c.hp.ctx_orig)))) : 1.0f;
        }
    }
    for (auto [key, dst] : {std::pair<const char *, int64_t *>{"bos_token_id", &c.bos}, {"eos_token_id", &c.eos}}) {
        auto it = j.find(key);
        if (it == j.end() || it->is_null()) continue;
        if (it->is_array() && !it->empty()) it = it->begin();  // a list of ids: the first one
        if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() >= c.hp.n_vocab)
            throw error(format("%s: field '%s' must be a token id below vocab_size", path.c_str(), key));
        *dst = it->get<int64_t>();
    }
    return c;
}

// Files of the checkpoint: the index's shards, model.safetensors, or every
// *.safetensors in the folder.
std::vector<std::string> weight_files(const std::string & dir, std::map<std::string, std::string> * weight_map) {
    const std::string index = dir + "/model.safetensors.index.json";
    if (cli::file_exists(index)) {
        const json j = read_json(index);
        auto it = j.is_object() ? j.find("weight_map") : j.end();
        if (it == j.end() || !it->is_object()) throw error(index + ": missing object 'weight_map'");
        std::set<std::string> files;
        for (auto & [name, file] : it->items()) {
            if (!file.is_string()) throw error(format("%s: weight_map.%s must be a file name", index.c_str(), name.c_str()));
            const std::string f = file.get<std::string>();
            if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
                throw error(format("%s: weight_map.%s: '%s' is not a file name in the folder", index.c_str(), name.c_str(), f.c_str()));
            (*weight_map)[name] = f;
            files.insert(f);
        }
        if (files.empty()) throw error(index + ": weight_map is empty");
        std::vector<std::string> out;
        for (const auto & f : files) out.push_back(dir + "/" + f);
        return out;
    }
    if (cli::file_exists(dir + "/model.safetensors")) return {dir + "/model.safetensors"};
    std::vector<std::string> out;
    if (DIR * d = ::opendir(dir.c_str())) {
        while (dirent * e = ::readdir(d)) {
            std::string n = e->d_name;
            if (n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0) out.push_back(dir + "/" + n);
        }
        ::closedir(d);
    }
    std::sort(out.begin(), out.end());
    if (out.empty())
        throw error(dir + ": no model.safetensors, model.safetensors.index.json or *.safetensors (PyTorch .bin checkpoints are not supported)");
    return out;
}

// tokenizer.json's model.vocab (piece -> id) as the pieces in id order: the
// ids must be 0..n-1, each once.
std::vector<std::string> read_pieces(const json & m, const std::string & path) {
    auto vit = m.find("vocab");
    if (vit == m.end() || !vit->is_object() || vit->empty()) throw error(path + ": model.vocab must be a non-empty object");
    std::vector<std::string> pieces(vit->size());
    std::vector<bool> seen(vit->size());
    for (auto & [piece, id] : vit->items()) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || size_t(id.get<int64_t>()) >= seen.size())
            throw error(format("%s: model.vocab: id of '%s' must be an integer below %zu", path.c_str(), piece.c_str(), seen.size()));
        const size_t i = size_t(id.get<int64_t>());
        if (seen[i]) throw error(format("%s: model.vocab: id %zu is used twice", path.c_str(), i));
        seen[i] = true;
        pieces[i] = piece;
    }
    return pieces;
}

// tokenizer.json's added_tokens into v: each piece at its id (ids past the
// vocabulary grow it, the gap UNUSED), typed CONTROL when "special", else
// USER_DEFINED; the unknown token keeps its type.
void add_added_tokens(const json & j, const std::string & path, vocab & v) {
    auto at = j.find("added_tokens");
    if (at == j.end() || !at->is_array()) return;
    for (const json & t : *at) {
        if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") ||
            !t["content"].is_string())
            throw error(path + ": added_tokens entries need an integer id and a string content");
        const int64_t id = t["id"].get<int64_t>();
        const std::string content = t["content"].get<std::string>();
        if (id < 0 || id > (int64_t(1) << 24)) throw error(format("%s: added token '%s' has id %lld", path.c_str(), content.c_str(), (long long) id));
        if (size_t(id) >= v.pieces.size()) {
            v.pieces.resize(size_t(id) + 1);
            v.scores.resize(size_t(id) + 1, 0.0f);
            v.types.resize(size_t(id) + 1, token_type::UNUSED);
        }
        v.pieces[size_t(id)] = content;
        if (int64_t(v.unk) != id) v.types[size_t(id)] = t.value("special", false) ? token_type::CONTROL : token_type::USER_DEFINED;
    }
}

bool is_byte_piece(const std::string & s) {
    return s.size() == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>' && std::isxdigit(uint8_t(s[3])) &&
           std::isxdigit(uint8_t(s[4]));
}

// tokenizer.json with a GPT-2-style byte-level BPE model (Qwen2/Qwen3):
// pieces as they are (byte-to-unicode text), the merges in rank order, added
// tokens as control (special) or user-defined pieces, and the pre-tokenizer
// llama.cpp names for the family (`pre`).
vocab read_byte_level_bpe(const json & j, const json & m, const std::string & path, const std::string & pre) {
    vocab v;
    v.kind = vocab_kind::BPE;
    v.pre = pre;
    v.pieces = read_pieces(m, path);
    v.types.assign(v.pieces.size(), token_type::NORMAL);
    auto mit = m.find("merges");
    if (mit == m.end() || !mit->is_array()) throw error(path + ": missing array model.merges");
    for (size_t r = 0; r < mit->size(); ++r) {
        const json & e = (*mit)[r];
        if (e.is_string()) v.merges.push_back(e.get<std::string>());
        else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string())
            v.merges.push_back(e[0].get<std::string>() + " " + e[1].get<std::string>());
        else throw error(format("%s: model.merges[%zu] is neither \"A B\" nor [\"A\", \"B\"]", path.c_str(), r));
    }
    v.bos = v.eos = v.unk = -1;
    v.add_bos = false;
    v.add_space_prefix = false;
    add_added_tokens(j, path, v);
    for (size_t i = 0; i < v.pieces.size(); ++i)
        if (v.pieces[i].empty()) {
            v.pieces[i] = format("[PAD%zu]", i);
            v.types[i] = token_type::UNUSED;
        }
    v.scores.assign(v.pieces.size(), 0.0f);
    return v;
}

// tokenizer.json with a SentencePiece-style BPE model (byte_fallback, "▁" for
// spaces). Scores follow the merge ranks: the piece made by merge r scores -r,
// so the earliest merge is applied first, as the BPE model does.
// A byte-level one (the others) goes to read_byte_level_bpe with the
// pre-tokenizer of `arch`.
vocab read_tokenizer_json(const std::string & path, const std::string & arch) {
    const json j = read_json(path);
    auto m = j.is_object() ? j.find("model") : j.end();
    if (m == j.end() || !m->is_object()) throw error(path + ": missing object 'model'");
    const std::string mtype = m->value("type", std::string());
    if (mtype != "BPE") throw error(format("%s: model.type '%s' is not supported (only BPE)", path.c_str(), mtype.c_str()));
    if (!m->value("byte_fallback", false)) {
        // llama.cpp tells pre-tokenizers apart by their output; here the family decides
        const char * pre = arch == "qwen2" || arch == "qwen3" ? "qwen2" : nullptr;
        if (!pre)
            throw error(format("%s: a GPT-2-style byte-level BPE vocabulary for architecture '%s' is not supported "
                               "(only for qwen2 and qwen3)", path.c_str(), arch.c_str()));
        return read_byte_level_bpe(j, *m, path, pre);
    }
    const std::vector<std::string> pieces = read_pieces(*m, path);
    const size_t n_base = pieces.size();
    vocab v;
    v.pieces = pieces;
    v.scores.assign(n_base, 0.0f);
    v.types.assign(n_base, token_type::NORMAL);
    std::map<std::string, int32_t> ids;
    for (size_t i = 0; i < n_base; ++i) ids[pieces[i]] = int32_t(i);

    auto mit = m->find("merges");
    if (mit == m->end() || !mit->is_array()) throw error(path + ": missing array model.merges");
    std::vector<bool> scored(n_base);
    for (size_t r = 0; r < mit->size(); ++r) {
        const json & e = (*mit)[r];
        std::string a, b;
        if (e.is_string()) {
            const std::string s = e.get<std::string>();
            size_t sp = s.find(' ');
            if (sp == std::string::npos) throw error(format("%s: model.merges[%zu] is not \"A B\"", path.c_str(), r));
            a = s.substr(0, sp);
            b = s.substr(sp + 1);
        } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
            a = e[0].get<std::string>();
            b = e[1].get<std::string>();
        } else {
            throw error(format("%s: model.merges[%zu] is neither \"A B\" nor [\"A\", \"B\"]", path.c_str(), r));
        }
        auto it = ids.find(a + b);
        if (it == ids.end())
            throw error(format("%s: model.merges[%zu] makes '%s', which is not in the vocabulary", path.c_str(), r, (a + b).c_str()));
        if (!scored[size_t(it->second)]) {
            scored[size_t(it->second)] = true;
            v.scores[size_t(it->second)] = -float(r);
        }
    }
    // Pieces no merge makes rank after every merge.
    for (size_t i = 0; i < n_base; ++i) {
        if (is_byte_piece(pieces[i])) v.types[i] = token_type::BYTE;
        else if (!scored[i] && pieces[i].size() > 1) v.scores[i] = -float(mit->size()) - float(i);
    }
    std::string unk = m->value("unk_token", std::string());
    v.unk = -1;
    if (!unk.empty()) {
        auto it = ids.find(unk);
        if (it == ids.end()) throw error(format("%s: model.unk_token '%s' is not in the vocabulary", path.c_str(), unk.c_str()));
        v.unk = it->second;
        v.types[size_t(v.unk)] = token_type::UNKNOWN;
    }
    add_added_tokens(j, path, v);
    for (size_t i = 0; i < v.pieces.size(); ++i)
        if (v.pieces[i].empty()) v.pieces[i] = format("[PAD%zu]", i);
    auto find = [&](const char * s) {
        for (size_t i = 0; i < v.pieces.size(); ++i)
            if (v.pieces[i] == s) return int32_t(i);
        return int32_t(-1);
    };
    v.bos = find("<s>");
    v.eos = find("</s>");
    if (auto pre = j.find("normalizer"); pre != j.end() && pre->is_object()) {
        // Llama's normalizer prepends "▁" (add_space_prefix); newer ones leave it to the pre-tokenizer.
        v.add_space_prefix = pre->dump().find("Prepend") != std::string::npos;
    }
    if (auto pt = j.find("pre_tokenizer"); pt != j.end() && pt->is_object()) {
        const std::string d = pt->dump();
        if (d.find("ByteLevel") != std::string::npos)
            throw error(path + ": GPT-2-style byte-level BPE vocabularies are not supported yet");
        if (d.find("prepend_scheme") != std::string::npos && d.find("\"first\"") != std::string::npos) v.add_space_prefix = true;
    }
    return v;
}

} // namespace

void plan_hf(const options & o, plan & p, std::vector<std::unique_ptr<safetensors_file>> & files) {
    const std::string dir = o.input;
    const hf_config c = read_config(dir + "/config.json");

    // Tokenizer.
    std::string tpath = o.tokenizer;
    if (tpath.empty()) {
        if (cli::file_exists(dir + "/tokenizer.model")) tpath = dir + "/tokenizer.model";
        else if (cli::file_exists(dir + "/tokenizer.json")) tpath = dir + "/tokenizer.json";
        else throw error(dir + ": no tokenizer.model or tokenizer.json (pass --tokenizer FILE)");
    }
    if (tpath.size() >= 5 && tpath.compare(tpath.size() - 5, 5, ".json") == 0) {
        p.voc = read_tokenizer_json(tpath, c.hp.arch);
    } else {
        spm_model sm = spm_model::load(tpath);
        if (sm.model_type != 2 && !o.quiet)
            std::fprintf(stderr, "gloas-convert: %s: SentencePiece model type %d is not BPE; tokenizing by piece scores as llama.cpp does\n",
                         tpath.c_str(), sm.model_type);
        p.voc = std::move(sm.v);
    }
    if (c.bos >= 0) p.voc.bos = int32_t(c.bos);
    if (c.eos >= 0) p.voc.eos = int32_t(c.eos);
    if (int64_t(p.voc.pieces.size()) > c.hp.n_vocab)
        throw error(format("%s: the tokenizer has %zu tokens, more than vocab_size %lld in config.json", tpath.c_str(),
                           p.voc.pieces.size(), (long long) c.hp.n_vocab));
    // Embedding rows past the tokenizer's pieces: padding tokens, as llama.cpp names them.
    for (int64_t i = int64_t(p.voc.pieces.size()); i < c.hp.n_vocab; ++i) {
        p.voc.pieces.push_back(format("[PAD%lld]", (long long) i));
        p.voc.scores.push_back(0.0f);  // BPE: unused, one per piece
        p.voc.types.push_back(token_type::UNUSED);
    }
    if (p.voc.bos >= int32_t(p.voc.pieces.size()) || p.voc.eos >= int32_t(p.voc.pieces.size()))
        throw error(tpath + ": bos/eos id out of range");
    tokenizer check(p.voc);  // throws if inconsistent
    (void) check;

    p.hp = c.hp;
    p.hp.name = o.name.empty() ? base_name(dir, false) : o.name;
    if (o.ctx) p.hp.n_ctx = o.ctx;
    p.hp.wtype = o.outtype;

    // Weights: every tensor by name, from whichever file holds it.
    std::map<std::string, std::string> weight_map;
    const std::vector<std::string> paths = weight_files(dir, &weight_map);
    std::map<std::string, std::pair<const safetensors_file *, const safetensors_tensor *>> all;
    for (const auto & fp : paths) {
        if (!o.quiet) std::fprintf(stderr, "gloas-convert: reading %s\n", fp.c_str());
        files.push_back(safetensors_file::open(fp));
        const safetensors_file & f = *files.back();
        for (const auto & t : f.tensors()) {
            auto [it, fresh] = all.emplace(t.name, std::make_pair(&f, &t));
            if (!fresh)
                throw error(format("%s: tensor '%s' is also in %s", fp.c_str(), t.name.c_str(), it->second.first->path().c_str()));
        }
    }
    for (const auto & [name, file] : weight_map) {
        auto it = all.find(name);
        if (it == all.end())
            throw error(format("%s/model.safetensors.index.json: tensor '%s' is not in %s", dir.c_str(), name.c_str(), file.c_str()));
        if (base_name(it->second.first->path(), false) != file)
            throw error(format("%s/model.safetensors.index.json: tensor '%s' is listed in %s but found in %s", dir.c_str(),
                               name.c_str(), file.c_str(), it->second.first->path().c_str()));
    }

    std::set<std::string> used;
    // Takes tensor `hf` with row-major shape (rows[, cols]); cols 0 means 1-D.
    auto take = [&](const std::string & hf, int64_t rows, int64_t cols, bool required = true) -> std::shared_ptr<source> {
        auto it = all.find(hf);
        if (it == all.end()) {
            if (required) throw error(format("%s: tensor '%s' is missing from the checkpoint", dir.c_str(), hf.c_str()));
            return nullptr;
        }
        const safetensors_tensor & t = *it->second.second;
        const std::vector<int64_t> want = cols ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{rows};
        if (t.shape != want) {
            std::string got, exp;
            for (int64_t d : t.shape) got += (got.empty() ? "" : ", ") + std::to_string(d);
            for (int64_t d : want) exp += (exp.empty() ? "" : ", ") + std::to_string(d);
            throw error(format("%s: tensor '%s' has shape [%s], expected [%s] from config.json", it->second.first->path().c_str(),
                               hf.c_str(), got.c_str(), exp.c_str()));
        }
        used.insert(hf);
        auto s = std::make_shared<source>();
        s->t = t.t;
        s->data = t.data;
        s->ne0 = cols ? cols : rows;
        s->rows = cols ? rows : 1;
        s->vec = cols == 0;
        return s;
    };
    const int64_t E = c.hp.n_embd, Q = c.hp.n_head * c.hp.head_dim, KV = c.hp.n_head_kv * c.hp.head_dim, F = c.hp.n_ff, V = c.hp.n_vocab;
    const bool gemma = c.hp.arch == "gemma2" || c.hp.arch == "gemma3";
    // Gemma's RMSNorm multiplies by 1 + w: the GGUF stores 1 + w, as llama.cpp's converter does.
    auto norm = [&](const std::string & hf, int64_t n) {
        auto t = take(hf, n, 0);
        if (gemma) t->add = 1.0f;
        return t;
    };
    auto blk = [](int64_t il, const char * n) { return "blk." + std::to_string(il) + "." + n + ".weight"; };
    auto embd = take("model.embed_tokens.weight", V, E);
    add(p, llama_tensor_name(llama_tensor::TOKEN_EMBD), embd, o.outtype);
    if (!c.long_factor.empty()) {
        for (auto [name, v] : {std::make_pair("rope_factors_long.weight", &c.long_factor),
                               std::make_pair("rope_factors_short.weight", &c.short_factor)}) {
            auto f = std::make_shared<source>();
            f->own = *v;
            f->data = reinterpret_cast<const uint8_t *>(f->own.data());
            f->ne0 = int64_t(f->own.size());
            f->rows = 1;
            f->vec = true;
            add(p, name, f, o.outtype);
        }
    }
    for (int64_t il = 0; il < c.hp.n_layer; ++il) {
        const std::string b = "model.layers." + std::to_string(il) + ".";
        add(p, llama_tensor_name(llama_tensor::ATTN_NORM, il), norm(b + "input_layernorm.weight", E), o.outtype);
        if (c.hp.arch == "phi3") {
            add(p, blk(il, "attn_qkv"), take(b + "self_attn.qkv_proj.weight", Q + 2 * KV, E), o.outtype);
        } else {
            auto q = take(b + "self_attn.q_proj.weight", Q, E);
            auto k = take(b + "self_attn.k_proj.weight", KV, E);
            if (c.hp.arch == "llama") {  // NORM rope: Hugging Face's NEOX-ordered rows put back
                q->row_map = unpermute_rows(c.hp.n_head, c.hp.head_dim);
                k->row_map = unpermute_rows(c.hp.n_head_kv, c.hp.head_dim);
            }
            add(p, llama_tensor_name(llama_tensor::ATTN_Q, il), q, o.outtype);
            add(p, llama_tensor_name(llama_tensor::ATTN_K, il), k, o.outtype);
            add(p, llama_tensor_name(llama_tensor::ATTN_V, il), take(b + "self_attn.v_proj.weight", KV, E), o.outtype);
        }
        if (c.hp.arch == "qwen2") {
            add(p, "blk." + std::to_string(il) + ".attn_q.bias", take(b + "self_attn.q_proj.bias", Q, 0), o.outtype);
            add(p, "blk." + std::to_string(il) + ".attn_k.bias", take(b + "self_attn.k_proj.bias", KV, 0), o.outtype);
            add(p, "blk." + std::to_string(il) + ".attn_v.bias", take(b + "self_attn.v_proj.bias", KV, 0), o.outtype);
        }
        if (c.hp.arch == "qwen3" || c.hp.arch == "gemma3") {
            add(p, blk(il, "attn_q_norm"), norm(b + "self_attn.q_norm.weight", c.hp.head_dim), o.outtype);
            add(p, blk(il, "attn_k_norm"), norm(b + "self_attn.k_norm.weight", c.hp.head_dim), o.outtype);
        }
        add(p, llama_tensor_name(llama_tensor::ATTN_OUTPUT, il), take(b + "self_attn.o_proj.weight", E, Q), o.outtype);
        if (gemma) {
            add(p, blk(il, "post_attention_norm"), norm(b + "post_attention_layernorm.weight", E), o.outtype);
            add(p, llama_tensor_name(llama_tensor::FFN_NORM, il), norm(b + "pre_feedforward_layernorm.weight", E), o.outtype);
            add(p, blk(il, "post_ffw_norm"), norm(b + "post_feedforward_layernorm.weight", E), o.outtype);
        } else {
            add(p, llama_tensor_name(llama_tensor::FFN_NORM, il), take(b + "post_attention_layernorm.weight", E, 0), o.outtype);
        }
        if (c.hp.arch == "phi3") {
            add(p, llama_tensor_name(llama_tensor::FFN_UP, il), take(b + "mlp.gate_up_proj.weight", 2 * F, E), o.outtype);
        } else {
            add(p, llama_tensor_name(llama_tensor::FFN_GATE, il), take(b + "mlp.gate_proj.weight", F, E), o.outtype);
            add(p, llama_tensor_name(llama_tensor::FFN_UP, il), take(b + "mlp.up_proj.weight", F, E), o.outtype);
        }
        add(p, llama_tensor_name(llama_tensor::FFN_DOWN, il), take(b + "mlp.down_proj.weight", E, F), o.outtype);
    }
    add(p, llama_tensor_name(llama_tensor::OUTPUT_NORM), norm("model.norm.weight", E), o.outtype);
    auto head = take("lm_head.weight", V, E, /*required=*/!c.tied);
    if (head) add(p, llama_tensor_name(llama_tensor::OUTPUT), head, o.outtype);

    for (const auto & [name, where] : all) {
        if (used.count(name)) continue;
        if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;  // recomputed at load
        if (name.find("experts") != std::string::npos)
            throw error(format("%s: tensor '%s' belongs to a mixture-of-experts model, which gloas does not support",
                               where.first->path().c_str(), name.c_str()));
        if (name.find("vision") != std::string::npos)
            throw error(format("%s: tensor '%s' belongs to a vision tower, which gloas does not support",
                               where.first->path().c_str(), name.c_str()));
        throw error(format("%s: tensor '%s' is not part of a %s model (unexpected for this architecture)",
                           where.first->path().c_str(), name.c_str(), c.hp.arch.c_str()));
    }
}


} // namespace gloas::convert
