// A Key Vault client on the official Azure SDK for Go (azsecrets + azidentity), run by
// crates/kv-emulator/tests/go_sdk.rs against keyseal-kv-emulator: it shows that the test server
// serves another SDK than Rust's, with its own authentication flow (MSAL's instance and tenant
// discovery, then the token endpoint) and its own expectations of the wire format.
//
// Environment: KV_URL, AZURE_AUTHORITY_HOST, AZURE_TENANT_ID, AZURE_CLIENT_ID, and
// AZURE_CLIENT_SECRET or AZURE_FEDERATED_TOKEN_FILE; SSL_CERT_FILE names the test CA.
// Prints one line per step; exits 1 at the first unexpected result.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

func fail(step string, err error) {
	fmt.Printf("FAIL %s: %v\n", step, err)
	os.Exit(1)
}

func check(step string, ok bool, detail string) {
	if !ok {
		fmt.Printf("FAIL %s: %s\n", step, detail)
		os.Exit(1)
	}
	fmt.Printf("ok %s\n", step)
}

// code returns the service's error code and HTTP status of err.
func code(err error) (string, int) {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.ErrorCode, re.StatusCode
	}
	return "", 0
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A cloud of its own, as for Azure Stack Hub: its authority host, and no instance discovery
	// against the public cloud (MSAL would ask login.microsoftonline.com about this host).
	opts := azcore.ClientOptions{Cloud: cloud.Configuration{
		ActiveDirectoryAuthorityHost: os.Getenv("AZURE_AUTHORITY_HOST"),
		Services:                     map[cloud.ServiceName]cloud.ServiceConfiguration{},
	}}
	var cred azcore.TokenCredential
	var err error
	if file := os.Getenv("AZURE_FEDERATED_TOKEN_FILE"); file != "" {
		cred, err = azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions: opts, TokenFilePath: file, DisableInstanceDiscovery: true,
			ClientID: os.Getenv("AZURE_CLIENT_ID"), TenantID: os.Getenv("AZURE_TENANT_ID"),
		})
	} else {
		cred, err = azidentity.NewClientSecretCredential(os.Getenv("AZURE_TENANT_ID"),
			os.Getenv("AZURE_CLIENT_ID"), os.Getenv("AZURE_CLIENT_SECRET"),
			&azidentity.ClientSecretCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true})
	}
	if err != nil {
		fail("credential", err)
	}
	client, err := azsecrets.NewClient(os.Getenv("KV_URL"), cred, &azsecrets.ClientOptions{
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		fail("client", err)
	}
	name := fmt.Sprintf("go-sdk-%d", time.Now().UnixNano())

	set1, err := client.SetSecret(ctx, name, azsecrets.SetSecretParameters{
		Value: to.Ptr("v1"), ContentType: to.Ptr("text/plain"),
		Tags: map[string]*string{"by": to.Ptr("go")},
	}, nil)
	if err != nil {
		fail("set", err)
	}
	v1 := set1.ID.Version()
	check("set", *set1.Value == "v1" && len(v1) == 32 && *set1.Attributes.Enabled, fmt.Sprint(set1.ID))
	set2, err := client.SetSecret(ctx, name, azsecrets.SetSecretParameters{Value: to.Ptr("v2")}, nil)
	if err != nil {
		fail("set again", err)
	}
	check("a new version", set2.ID.Version() != v1, string(*set2.ID))

	latest, err := client.GetSecret(ctx, name, "", nil)
	if err != nil {
		fail("get latest", err)
	}
	check("get latest", *latest.Value == "v2", *latest.Value)
	old, err := client.GetSecret(ctx, name, v1, nil)
	if err != nil {
		fail("get version", err)
	}
	check("get version", *old.Value == "v1" && *old.ContentType == "text/plain", *old.Value)

	upd, err := client.UpdateSecretProperties(ctx, name, v1, azsecrets.UpdateSecretPropertiesParameters{
		SecretAttributes: &azsecrets.SecretAttributes{Enabled: to.Ptr(false)},
	}, nil)
	if err != nil {
		fail("update", err)
	}
	check("update", !*upd.Attributes.Enabled && upd.Value == nil, "")
	_, err = client.GetSecret(ctx, name, v1, nil)
	c, status := code(err)
	check("disabled version refused", status == http.StatusForbidden && c == "Forbidden", fmt.Sprint(err))

	// Several pages (the server's page size is small): every name once.
	for i := 0; i < 5; i++ {
		if _, err := client.SetSecret(ctx, fmt.Sprintf("%s-p%d", name, i),
			azsecrets.SetSecretParameters{Value: to.Ptr("x")}, nil); err != nil {
			fail("set for paging", err)
		}
	}
	seen, pages := map[string]int{}, 0
	pager := client.NewListSecretPropertiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			fail("list", err)
		}
		pages++
		for _, s := range page.Value {
			seen[s.ID.Name()]++
		}
	}
	ok := pages > 1 && seen[name] == 1
	for i := 0; i < 5; i++ {
		ok = ok && seen[fmt.Sprintf("%s-p%d", name, i)] == 1
	}
	check("list pages", ok, fmt.Sprintf("%d pages, %v", pages, seen))
	versions := 0
	vpager := client.NewListSecretPropertiesVersionsPager(name, nil)
	for vpager.More() {
		page, err := vpager.NextPage(ctx)
		if err != nil {
			fail("list versions", err)
		}
		versions += len(page.Value)
	}
	check("list versions", versions == 2, fmt.Sprint(versions))

	backup, err := client.BackupSecret(ctx, name, nil)
	if err != nil {
		fail("backup", err)
	}
	del, err := client.DeleteSecret(ctx, name, nil)
	if err != nil {
		fail("delete", err)
	}
	check("delete", del.RecoveryID != nil && strings.HasSuffix(string(*del.RecoveryID), "/deletedsecrets/"+name), "")
	_, err = client.SetSecret(ctx, name, azsecrets.SetSecretParameters{Value: to.Ptr("v3")}, nil)
	c, status = code(err)
	check("a deleted name is not reused", status == http.StatusConflict && c == "Conflict", fmt.Sprint(err))
	if _, err := client.GetDeletedSecret(ctx, name, nil); err != nil {
		fail("get deleted", err)
	}
	if _, err := client.RecoverDeletedSecret(ctx, name, nil); err != nil {
		fail("recover", err)
	}
	back, err := client.GetSecret(ctx, name, "", nil)
	if err != nil {
		fail("get recovered", err)
	}
	check("recover", *back.Value == "v2", *back.Value)
	if _, err := client.DeleteSecret(ctx, name, nil); err != nil {
		fail("delete again", err)
	}
	if _, err := client.PurgeDeletedSecret(ctx, name, nil); err != nil {
		fail("purge", err)
	}
	_, err = client.GetDeletedSecret(ctx, name, nil)
	_, status = code(err)
	check("purge", status == http.StatusNotFound, fmt.Sprint(err))
	restored, err := client.RestoreSecret(ctx, azsecrets.RestoreSecretParameters{SecretBackup: backup.Value}, nil)
	if err != nil {
		fail("restore", err)
	}
	check("restore", restored.ID.Name() == name, string(*restored.ID))
	fmt.Println("done")
}
