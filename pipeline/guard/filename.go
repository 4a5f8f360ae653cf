// The file name and path detector: Windows paths (C:\Users\...), UNC shares, Unix paths
// (/home/taro/...), SSH key files (id_rsa), and names with a document extension (見積書.pdf,
// "Q3 report.xlsx", report.tar.gz) told apart from dotted ids that end in a format
// (app.export.csv). A file's name or path is the customer's content and often a person's
// name: input data under the policy (reason input_data.file_name).

package guard

import (
	"strings"
	"unicode/utf8"
)

func isFileName(s string, p shape) bool {
	if len(s) >= 3 && isLower(s[0]) && s[1] == ':' && (s[2] == '\\' || s[2] == '/') {
		return true // C:\Users\...
	}
	if strings.HasPrefix(s, `\\`) {
		return true // \\server\share
	}
	if p.slash && (strings.HasPrefix(s, "/") || strings.HasPrefix(s, "~/") || strings.HasPrefix(s, "./") || strings.HasPrefix(s, "../")) {
		if strings.Count(s, "/") >= 2 && !strings.ContainsAny(s, " ") {
			return true // /home/taro/...
		}
	}
	if sshKeyFile(s) {
		return true
	}
	if !p.dot {
		return false
	}
	i := strings.LastIndexByte(s, '.')
	stem, ext := s[:i], s[i+1:]
	if stem == "" || latin[ext]&wFileExt == 0 {
		return false
	}
	for j := 0; j < len(stem); j++ {
		if c := stem[j]; c >= utf8.RuneSelf || c == ' ' || c == '/' || c == '\\' || c == '(' {
			return true // 見積書.pdf, "Q3 report.xlsx", dir/file.pdf, copy (2).docx
		}
	}
	k := strings.LastIndexByte(stem, '.')
	if k < 0 {
		return true // a single dot before a document extension: report.pdf
	}
	// A dotted id may end in a format (app.export.csv); a file's last stem part
	// usually has a date, a version or a word like "final".
	last := stem[k+1:]
	if last == "" || latin[last]&wFileExt != 0 {
		return true // report.tar.gz, customers.csv.zip
	}
	for j := 0; j < len(last); j++ {
		if c := last[j]; !isLower(c) {
			return true
		}
	}
	return latin[last]&wFileStem != 0
}

// sshKeyFile: the default names of SSH key files (id_rsa, id_ed25519.pub), which carry no
// extension of their own.
func sshKeyFile(s string) bool {
	s = strings.TrimSuffix(s, ".pub")
	switch s {
	case "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "authorized_keys", "known_hosts":
		return true
	}
	return false
}
