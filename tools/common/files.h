// File helpers shared by the tools.
#pragma once

#include <string>

namespace gloas::cli {

// Whether `path` names anything (file, folder, ...) that stat can reach.
bool file_exists(const std::string & path);
// Whether `path` is a folder.
bool is_dir(const std::string & path);
// Whether `path` is a regular file.
bool is_file(const std::string & path);
// Whether the file at `path` begins with GGUF's magic; false when it cannot
// be read.
bool is_gguf_file(const std::string & path);
// The last component of `path` (trailing slashes ignored), without its
// extension when `strip_ext` (a leading dot is not an extension).
std::string base_name(std::string path, bool strip_ext = true);
// All of stdin; a gloas::error naming `flag` when it cannot be read.
std::string read_stdin(const char * flag);

} // namespace gloas::cli
