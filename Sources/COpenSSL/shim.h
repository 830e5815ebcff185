// The system OpenSSL (Debian's libssl-dev): HMAC-SHA256 and constant-time comparison for the agent handshake,
// and TLS for the blocking HTTP client.
#ifndef LOADGEN_COPENSSL_SHIM_H
#define LOADGEN_COPENSSL_SHIM_H
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#endif
