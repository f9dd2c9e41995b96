//! A Lambda function's AWS configuration (`stackdrop_adapters::lambda_config`) comes from the
//! environment variables Lambda sets and from nothing else: no profile file is read, no
//! credentials chain is built (what made it cheaper at cold start). The CLI's configuration
//! (`sdk_config`) still finds the shared config files. It sets the process's environment, so it
//! is one test in a test binary of its own.

use aws_sdk_s3::config::ProvideCredentials;
use stackdrop_adapters::{lambda_config, sdk_config};

const LAMBDA_VARIABLES: [&str; 4] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
];

#[tokio::test]
async fn a_function_reads_its_credentials_and_region_from_lambdas_variables_only() {
    let files = tempfile::tempdir().unwrap();
    let config = files.path().join("config");
    std::fs::write(&config, "[default]\nregion = eu-west-1\n").unwrap();
    let credentials = files.path().join("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = AKIDFROMPROFILE\naws_secret_access_key = profile\n",
    )
    .unwrap();
    std::env::set_var("AWS_CONFIG_FILE", &config);
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &credentials);
    for name in LAMBDA_VARIABLES
        .iter()
        .chain(&["AWS_DEFAULT_REGION", "AWS_PROFILE"])
    {
        std::env::remove_var(name);
    }

    // The files hold a region and credentials: the CLI's configuration finds them.
    let cli = sdk_config(Some("stackdrop-cli")).await;
    assert_eq!(cli.region().map(|r| r.as_ref()), Some("eu-west-1"));
    // A function without Lambda's variables has neither: it never read the files.
    let bare = lambda_config(Some("stackdrop-poll")).await;
    assert_eq!(bare.region(), None);
    let none = bare
        .credentials_provider()
        .unwrap()
        .provide_credentials()
        .await;
    assert!(none.is_err(), "credentials from somewhere: {none:?}");

    // With the variables Lambda sets, those are the function's region and credentials.
    for (name, value) in LAMBDA_VARIABLES.iter().zip([
        "AKIDFROMLAMBDA",
        "lambda-secret",
        "lambda-session",
        "ap-southeast-2",
    ]) {
        std::env::set_var(name, value);
    }
    let conf = lambda_config(Some("stackdrop-poll")).await;
    assert_eq!(conf.region().map(|r| r.as_ref()), Some("ap-southeast-2"));
    let creds = conf
        .credentials_provider()
        .unwrap()
        .provide_credentials()
        .await
        .expect("Lambda's credentials");
    assert_eq!(creds.access_key_id(), "AKIDFROMLAMBDA");
    assert_eq!(creds.secret_access_key(), "lambda-secret");
    assert_eq!(creds.session_token(), Some("lambda-session"));
}
