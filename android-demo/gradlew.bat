@rem Gradle wrapper launcher, kept minimal on purpose: gradle\wrapper\gradle-wrapper.jar is not in the
@rem repository. Create it once with an installed Gradle 8.x (this also writes the standard scripts):
@rem     in android-demo: gradle wrapper --gradle-version 8.11.1
@echo off
set APP_HOME=%~dp0
set WRAPPER_JAR=%APP_HOME%gradle\wrapper\gradle-wrapper.jar
if not exist "%WRAPPER_JAR%" (
  echo gradlew: %WRAPPER_JAR% is missing; create it once with: gradle wrapper --gradle-version 8.11.1 1>&2
  exit /b 1
)
set JAVACMD=java
if defined JAVA_HOME set JAVACMD=%JAVA_HOME%\bin\java
"%JAVACMD%" %JAVA_OPTS% %GRADLE_OPTS% "-Dorg.gradle.appname=gradlew" -classpath "%WRAPPER_JAR%" org.gradle.wrapper.GradleWrapperMain %*
exit /b %ERRORLEVEL%
