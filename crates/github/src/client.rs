use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use octocrab::models::{AppId, InstallationId};
use octocrab::{Octocrab, Page};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::{GitHubError, GitHubSettings};

/// `owner/name` of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepositoryName {
    /// The user or organisation.
    pub owner: String,
    /// The repository.
    pub name: String,
}

impl RepositoryName {
    /// Parses `owner/name`.
    pub fn parse(text: &str) -> Result<Self, GitHubError> {
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|character| character.is_ascii_alphanumeric() || "-_.".contains(character))
        };
        match text.split_once('/') {
            Some((owner, name)) if valid(owner) && valid(name) => Ok(RepositoryName {
                owner: owner.to_string(),
                name: name.to_string(),
            }),
            _ => Err(GitHubError::Payload(format!(
                "`{text}` is not a repository name of the form owner/name"
            ))),
        }
    }

    /// A pull request named as `owner/repo#42` or by its web URL
    /// (`https://github.com/owner/repo/pull/42`, or an Enterprise Server's).
    pub fn parse_pull_request(text: &str) -> Result<(Self, u64), GitHubError> {
        let invalid = || {
            GitHubError::Payload(format!(
                "`{text}` names no pull request: write owner/repo#42 or the pull request's URL"
            ))
        };
        let text = text.trim().trim_end_matches('/');
        if let Some((repository, number)) = text.split_once('#') {
            let number = number.parse().map_err(|_| invalid())?;
            return Ok((RepositoryName::parse(repository)?, number));
        }
        let path = text
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(_, path)| path)
            .ok_or_else(invalid)?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            [owner, name, "pull", number, ..] => Ok((
                RepositoryName::parse(&format!("{owner}/{name}"))?,
                number.parse().map_err(|_| invalid())?,
            )),
            _ => Err(invalid()),
        }
    }

    /// `/repos/{owner}/{name}`, the prefix of every repository route.
    pub fn route(&self) -> String {
        format!("/repos/{}/{}", self.owner, self.name)
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.owner, self.name)
    }
}

/// An authenticated connection to GitHub (or a GitHub Enterprise Server).
///
/// As an App, it signs a JWT with the private key and exchanges it for one token per
/// installation; octocrab caches each token and mints a new one shortly before it
/// expires. The installation clients are kept here, so the cache lives as long as this.
pub struct GitHub {
    root: Octocrab,
    is_app: bool,
    /// GitHub Enterprise Server answers GraphQL at `/api/graphql`, beside the REST root
    /// `/api/v3`; `None` on github.com, where both share a root.
    enterprise_graphql_root: Option<String>,
    /// The plain token, when not acting as an App (for the Enterprise GraphQL client).
    plain_token: Option<String>,
    installations: Mutex<HashMap<u64, Octocrab>>,
    /// Which installation covers which owner (user or organisation).
    owner_installations: Mutex<HashMap<String, u64>>,
    /// The login deep-review's comments are posted as, looked up once.
    own_login: tokio::sync::OnceCell<String>,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

impl GitHub {
    /// Connects as configured: the App when `app_id` is set, else the token in
    /// `token_env`. Reads the secrets from the environment (or the key file).
    pub fn connect(settings: &GitHubSettings) -> Result<Self, GitHubError> {
        match settings.app_id {
            Some(app_id) => {
                let key = jsonwebtoken_key(&private_key(settings)?)?;
                let builder = builder_for(&settings.api_url)?.app(AppId(app_id), key);
                Self::build(&settings.api_url, builder, None)
            }
            None => {
                let token = std::env::var(&settings.token_env)
                    .ok()
                    .filter(|token| !token.trim().is_empty())
                    .ok_or_else(|| {
                        GitHubError::Configuration(format!(
                            "no credentials: set github.app_id with a private key for a GitHub App, \
                             or put a token in ${}",
                            settings.token_env
                        ))
                    })?;
                Self::with_token(&settings.api_url, token.trim())
            }
        }
    }

    /// Connects to the REST API at `api_url` with a plain token already in hand.
    pub fn with_token(api_url: &str, token: &str) -> Result<Self, GitHubError> {
        let builder = builder_for(api_url)?.personal_token(token.to_string());
        Self::build(api_url, builder, Some(token.to_string()))
    }

    /// Without `plain_token`, `builder` authenticates as an App.
    fn build(
        api_url: &str,
        builder: Builder,
        plain_token: Option<String>,
    ) -> Result<Self, GitHubError> {
        let root = builder.build().map_err(|error| {
            GitHubError::Configuration(format!(
                "building the GitHub client: {}",
                crate::first_line(&error.to_string())
            ))
        })?;
        let api_url = api_url.trim_end_matches('/');
        Ok(GitHub {
            root,
            is_app: plain_token.is_none(),
            enterprise_graphql_root: api_url
                .strip_suffix("/v3")
                .filter(|root| root.ends_with("/api"))
                .map(str::to_string),
            plain_token,
            installations: Mutex::new(HashMap::new()),
            owner_installations: Mutex::new(HashMap::new()),
            own_login: tokio::sync::OnceCell::new(),
        })
    }

    /// The login deep-review's comments appear under: `<app slug>[bot]` for an App (from
    /// `GET /app`), the token's user otherwise (`GET /user`). Its markers are trusted only
    /// in comments by this login, since anyone can write a marker into a comment.
    pub async fn own_login(&self) -> Result<String, GitHubError> {
        self.own_login
            .get_or_try_init(|| async {
                #[derive(Deserialize)]
                struct App {
                    slug: String,
                }
                #[derive(Deserialize)]
                struct User {
                    login: String,
                }
                if self.is_app {
                    let app: App = self.root.get("/app", None::<&()>).await.map_err(|error| {
                        GitHubError::api("reading the App's own name (GET /app)".to_string(), error)
                    })?;
                    Ok(format!("{}[bot]", app.slug))
                } else {
                    let user: User =
                        self.root.get("/user", None::<&()>).await.map_err(|error| {
                            GitHubError::api(
                                "reading the token's user (GET /user)".to_string(),
                                error,
                            )
                        })?;
                    Ok(user.login)
                }
            })
            .await
            .cloned()
    }

    /// A client for `repository`: the installation's when acting as an App (the webhook
    /// names it in `installation`; otherwise it is looked up once per owner).
    pub async fn for_repository(
        &self,
        repository: &RepositoryName,
        installation: Option<u64>,
    ) -> Result<Octocrab, GitHubError> {
        self.for_owner(&repository.owner, installation, || {
            format!("{}/installation", repository.route())
        })
        .await
    }

    /// A client for GraphQL calls about `repository`. On github.com it is the REST
    /// client; an Enterprise Server serves GraphQL from another root, reached with the
    /// same installation token.
    pub async fn graphql_for_repository(
        &self,
        repository: &RepositoryName,
    ) -> Result<Octocrab, GitHubError> {
        let rest = self.for_repository(repository, None).await?;
        let Some(root) = &self.enterprise_graphql_root else {
            return Ok(rest);
        };
        let token = match &self.plain_token {
            Some(token) => token.clone(),
            None => {
                use secrecy::ExposeSecret;
                rest.installation_token()
                    .await
                    .map_err(|error| GitHubError::api("minting an installation token", error))?
                    .expose_secret()
                    .to_string()
            }
        };
        builder_for(root)?
            .personal_token(token)
            .build()
            .map_err(|error| {
                GitHubError::Configuration(format!(
                    "building the GraphQL client for {root}: {}",
                    crate::first_line(&error.to_string())
                ))
            })
    }

    /// A client for an organisation's repositories (the sweep).
    pub async fn for_organisation(&self, organisation: &str) -> Result<Octocrab, GitHubError> {
        self.for_owner(organisation, None, || {
            format!("/orgs/{organisation}/installation")
        })
        .await
    }

    async fn for_owner(
        &self,
        owner: &str,
        installation: Option<u64>,
        lookup_route: impl FnOnce() -> String,
    ) -> Result<Octocrab, GitHubError> {
        if !self.is_app {
            return Ok(self.root.clone());
        }
        let known = installation.or_else(|| {
            lock(&self.owner_installations)
                .get(&owner.to_ascii_lowercase())
                .copied()
        });
        let id = match known {
            Some(id) => id,
            None => {
                let route = lookup_route();
                let found: Installation =
                    self.root
                        .get(&route, None::<&()>)
                        .await
                        .map_err(|error| {
                            GitHubError::api(
                                format!("finding the App's installation for {owner} (is the App installed there?)"),
                                error,
                            )
                        })?;
                found.id
            }
        };
        lock(&self.owner_installations).insert(owner.to_ascii_lowercase(), id);
        if let Some(client) = lock(&self.installations).get(&id) {
            return Ok(client.clone());
        }
        let client = self
            .root
            .installation(InstallationId(id))
            .map_err(|error| {
                GitHubError::api(format!("authenticating as installation {id}"), error)
            })?;
        lock(&self.installations).insert(id, client.clone());
        Ok(client)
    }
}

/// octocrab's builder before authentication is chosen.
type Builder = octocrab::OctocrabBuilder<
    octocrab::NoSvc,
    octocrab::DefaultOctocrabBuilderConfig,
    octocrab::NoAuth,
    octocrab::NotLayerReady,
>;

fn builder_for(api_url: &str) -> Result<Builder, GitHubError> {
    Octocrab::builder().base_uri(api_url).map_err(|error| {
        GitHubError::Configuration(format!(
            "github.api_url `{api_url}` is not a URL: {}",
            crate::first_line(&error.to_string())
        ))
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a cache map half-written.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn private_key(settings: &GitHubSettings) -> Result<String, GitHubError> {
    if let Some(path) = &settings.private_key_path {
        return std::fs::read_to_string(path).map_err(|error| {
            GitHubError::Configuration(format!(
                "github.private_key_path: cannot read {path}: {error}"
            ))
        });
    }
    std::env::var(&settings.private_key_env)
        .ok()
        .filter(|pem| !pem.trim().is_empty())
        .ok_or_else(|| {
            GitHubError::Configuration(format!(
                "github.app_id is set but there is no private key: set github.private_key_path \
                 or ${}",
                settings.private_key_env
            ))
        })
}

fn jsonwebtoken_key(pem: &str) -> Result<jsonwebtoken::EncodingKey, GitHubError> {
    jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|error| {
        GitHubError::Configuration(format!(
            "the GitHub App private key is not an RSA key in PEM format: {error}"
        ))
    })
}

/// Every item of a paginated list, following the `Link: rel="next"` headers.
///
/// The next links are followed as relative routes: octocrab only sends credentials to
/// `api.github.com` or to relative routes, so an absolute link of an Enterprise Server
/// would otherwise be fetched unauthenticated.
pub(crate) async fn all_pages<T: DeserializeOwned>(
    client: &Octocrab,
    route: &str,
    action: impl Fn() -> String,
) -> Result<Vec<T>, GitHubError> {
    let mut page: Page<T> = client
        .get(route, None::<&()>)
        .await
        .map_err(|error| GitHubError::api(action(), error))?;
    let mut items = page.take_items();
    while let Some(next) = page.next.take() {
        let relative = next
            .path_and_query()
            .map(|path| path.as_str().to_string())
            .unwrap_or_default();
        page = client
            .get(relative, None::<&()>)
            .await
            .map_err(|error| GitHubError::api(action(), error))?;
        items.append(&mut page.take_items());
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_are_checked() {
        let name = RepositoryName::parse("acme/widgets.rs").expect("valid");
        assert_eq!(name.route(), "/repos/acme/widgets.rs");
        for bad in ["acme", "acme/", "/widgets", "acme/wid gets", "a/b/c"] {
            assert!(RepositoryName::parse(bad).is_err(), "{bad}");
        }
        for text in [
            "acme/widgets#42",
            "https://github.com/acme/widgets/pull/42",
            "https://ghe.example.com/acme/widgets/pull/42/files",
        ] {
            let (name, number) = RepositoryName::parse_pull_request(text).expect(text);
            assert_eq!((name.to_string().as_str(), number), ("acme/widgets", 42));
        }
        for bad in [
            "acme/widgets",
            "acme/widgets#x",
            "https://github.com/acme/widgets/issues/4",
        ] {
            assert!(RepositoryName::parse_pull_request(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn missing_credentials_are_named() {
        let settings = GitHubSettings {
            token_env: "DEEP_REVIEW_TEST_UNSET_TOKEN".to_string(),
            ..GitHubSettings::default()
        };
        let Err(error) = GitHub::connect(&settings) else {
            panic!("connected without credentials");
        };
        assert!(
            error.to_string().contains("DEEP_REVIEW_TEST_UNSET_TOKEN"),
            "{error}"
        );
        let settings = GitHubSettings {
            app_id: Some(7),
            private_key_env: "DEEP_REVIEW_TEST_UNSET_KEY".to_string(),
            ..GitHubSettings::default()
        };
        let Err(error) = GitHub::connect(&settings) else {
            panic!("connected without a key");
        };
        assert!(
            error.to_string().contains("DEEP_REVIEW_TEST_UNSET_KEY"),
            "{error}"
        );
    }
}
